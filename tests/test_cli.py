"""The headless command line: the README's main job, and its errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from atelier.cli import main

from helpers import SAMPLES

ROOT = Path(__file__).resolve().parents[1]


def test_main_job_multiplies_the_shipped_samples(tmp_path: Path) -> None:
    # the exact command README.md gives, in a fresh interpreter
    result = subprocess.run([sys.executable, "atelier_cli.py", "multiply", "samples/originals", "--output",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, env={**os.environ})
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "atelier" / "augmented" / "v001"
    assert f"wrote 40 images from 4 originals to {folder}" in result.stdout
    records = [json.loads(x) for x in (folder / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 40 == len(list(folder.glob("*.png")))
    assert {r["variant"] for r in records} >= {"original", "rotation_+45", "gray_scale"}


def test_convert_and_random_variants_with_a_recipe_file(tmp_path: Path) -> None:
    assert main(["convert", str(SAMPLES), "--output", str(tmp_path), "--resize", "exact", "--width", "64",
                 "--height", "64"]) == 0
    assert len(list((tmp_path / "atelier" / "png" / "v001").glob("*.png"))) == 4
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"hflip": 1.0, "rotation": {"p": 1.0, "low": 5, "high": 5}}))
    assert main(["multiply", str(SAMPLES), "--output", str(tmp_path), "--variants", "", "--no-original",
                 "--random", "1", "--recipe", str(recipe), "--seed", "3"]) == 0
    assert len(list((tmp_path / "atelier" / "augmented" / "v001").glob("*__random_01.png"))) == 4


def test_errors_are_one_clear_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["multiply", str(tmp_path / "missing"), "--output", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["multiply", str(SAMPLES), "--output", str(tmp_path), "--subfolder", "../up"]) == 2
    assert main(["multiply", str(SAMPLES), "--output", str(tmp_path), "--variants", "sepia"]) == 2
    assert "unknown variant 'sepia'" in capsys.readouterr().err
    assert not (tmp_path / "atelier").exists()


def test_train_writes_a_lora_and_resumes_from_its_run_folder(tmp_path: Path, capsys) -> None:
    from helpers import tiny_sd15_folder

    model = tiny_sd15_folder(tmp_path / "model")
    args = ["train", str(SAMPLES), "--model", str(model), "--loras", str(tmp_path / "loras"), "--run",
            str(tmp_path / "run"), "--resolution", "64", "--rank", "4", "--steps", "2", "--checkpoint-every", "1",
            "--device", "cpu", "--name", "demo"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "wrote " + str(tmp_path / "loras" / "demo.safetensors") in out
    from atelier.core.sd15 import lora_file

    metadata = lora_file.read_lora(tmp_path / "loras" / "demo.safetensors")[1]
    trainable, targeted = int(metadata["atelier_trainable_params"]), int(metadata["atelier_targeted_params"])
    assert f"LoRA trains {trainable:,} parameters in {metadata['atelier_lora_layers']} layers instead of their " \
           f"{targeted:,} weights" in out and 0 < trainable < targeted
    assert main([*args[:-4], "--steps", "3", "--device", "cpu", "--name", "demo"]) == 0
    out = capsys.readouterr().out
    assert "resumed from step 2" in out and "demo_2.safetensors" in out
    assert main([*args[:2], "--model", str(tmp_path), *args[4:]]) == 2
    assert "not a diffusers SD 1.5 folder" in capsys.readouterr().err
    assert main([*args[:6], "--run", str(tmp_path / "run_q"), *args[8:], "--qlora"]) == 2
    assert "QLoRA (4-bit NF4 base) runs on a CUDA GPU only" in capsys.readouterr().err
    assert not (tmp_path / "run_q").exists()


def test_train_from_a_single_file_checkpoint(tmp_path: Path, capsys) -> None:
    from safetensors.torch import load_file, save_file

    from helpers import tiny_sd15_parts, to_ldm_checkpoint

    checkpoint = tmp_path / "tiny_sd15.safetensors"
    save_file({k: v.contiguous() for k, v in to_ldm_checkpoint(tiny_sd15_parts()).items()}, str(checkpoint))
    assert main(["train", str(SAMPLES), "--model", str(checkpoint), "--loras", str(tmp_path / "loras"), "--run",
                 str(tmp_path / "run"), "--resolution", "64", "--rank", "4", "--steps", "2", "--device", "cpu"]) == 0
    assert "wrote " in capsys.readouterr().out
    tensors = load_file(str(tmp_path / "loras" / "atelier_lora.safetensors"))
    assert any(k.startswith("lora_unet_down_blocks_0_attentions_0") for k in tensors)


def test_style_augmentation_and_decoder_training_headless(tmp_path: Path, capsys) -> None:
    from helpers import tiny_adain_files

    encoder, decoder = tiny_adain_files(tmp_path / "adain")
    styles = tmp_path / "styles"
    styles.mkdir()
    shutil.copy(SAMPLES / "coffee.webp", styles / "coffee.webp")
    model = ["--encoder", str(encoder), "--decoder", str(decoder), "--output", str(tmp_path / "out"), "--device", "cpu"]
    assert main(["style", str(SAMPLES), "--styles", str(styles), *model, "--direction", "restyle_originals"]) == 0
    folder = tmp_path / "out" / "atelier" / "styled" / "v001"
    assert "wrote 8 images (4 virtual): 4 content pictures in the style of 1 style pictures" in capsys.readouterr().out
    assert (folder / "rocket__style_coffee.png").exists() and (folder / "rocket__style_coffee.txt").exists()
    # the seed's way (the default): the samples as content, painted in the style of the one original; an
    # original that fails to decode is named, and the rest go on
    from test_bad_inputs_training import truncated

    truncated(styles / "broken.png", "PNG")
    assert main(["style", str(styles), "--content-folder", str(SAMPLES), *model, "--trigger", "sks"]) == 0
    out, err = capsys.readouterr()
    assert "wrote 5 images (4 virtual): 4 content pictures in the style of 1 originals" in out
    assert f"skipped {styles / 'broken.png'}: " in err
    folder = folder.parent / "v002"
    caption = (SAMPLES / "rocket.txt").read_text(encoding="utf-8").strip()
    assert (folder / "rocket__in_coffee.txt").read_text(encoding="utf-8") == f"sks, {caption}\n"
    assert main(["style", str(styles), *model, "--whole-set", "--style-weights", "1, 2"]) == 2
    assert "give --content-folder" in capsys.readouterr().err
    assert main(["style", str(styles), "--content-folder", str(SAMPLES), *model, "--whole-set", "--style-weights",
                 "1, 2"]) == 2
    assert "2 style weight(s) for 1 original(s)" in capsys.readouterr().err
    assert main(["style", str(styles), "--content-folder", str(SAMPLES), *model, "--style-weights", "1"]) == 2
    assert "turn on --whole-set" in capsys.readouterr().err
    assert sorted(p.name for p in folder.parent.iterdir()) == ["v001", "v002"]
    args = ["train-decoder", str(SAMPLES), str(styles), "--encoder", str(encoder), "--out-dir",
            str(tmp_path / "adain"), "--run", str(tmp_path / "run"), "--batch-size", "2", "--resize-to", "48",
            "--crop", "32", "--device", "cpu", "--name", "mine"]
    assert main([*args, "--steps", "2"]) == 0
    assert "wrote " + str(tmp_path / "adain" / "mine.safetensors") in capsys.readouterr().out
    assert main([*args, "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "resumed from step 2" in out and "mine_2.safetensors" in out
    assert main(["style", str(SAMPLES), "--content-folder", str(styles), "--encoder", str(decoder), "--decoder",
                 str(decoder), "--output", str(tmp_path / "out")]) == 2
    assert "does not fit the AdaIN encoder" in capsys.readouterr().err


def test_audio_and_adapter_training_run_headless_and_resume(tmp_path: Path, capsys) -> None:
    from PIL import Image

    from helpers import synthetic_paired_folder, synthetic_picture, tiny_clip_folder, tiny_sd15_folder

    clip = tiny_clip_folder(tmp_path / "clip")
    pairs = synthetic_paired_folder(tmp_path / "pairs", per_class=2)
    audio = ["audio-train", str(pairs), "--clip", str(clip), "--out-dir", str(tmp_path / "enc"), "--run",
             str(tmp_path / "runs"), "--epochs", "2", "--batch-size", "4", "--sample-rate", "8000",
             "--window-seconds", "0.5", "--n-mels", "32", "--val-fraction", "0.25", "--device", "cpu"]
    assert main(audio) == 0
    out = capsys.readouterr().out
    assert "epoch 2: loss" in out and "R@1" in out and (tmp_path / "enc" / "atelier_audio.safetensors").is_file()
    assert main([*audio[:-2], "--epochs", "3", "--device", "cpu"]) == 0  # a longer run resumes after epoch 2
    assert "epoch 3: loss" in capsys.readouterr().out
    assert (tmp_path / "enc" / "atelier_audio_2.safetensors").is_file()
    assert main([*audio[:2], "--clip", str(tmp_path / "nothing"), *audio[4:]]) == 2

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for kind in range(3):
        Image.fromarray(synthetic_picture(kind, size=64)).save(pictures / f"p{kind}.png")
    model = tiny_sd15_folder(tmp_path / "model")
    adapter = ["adapter-train", str(pictures), "--model", str(model), "--clip", str(clip), "--out-dir",
               str(tmp_path / "adapters"), "--run", str(tmp_path / "adapter_run"), "--steps", "3", "--batch-size", "2",
               "--resolution", "64", "--device", "cpu"]
    assert main(adapter) == 0
    assert "over 3 steps" in capsys.readouterr().out
    assert (tmp_path / "adapters" / "atelier_adapter.safetensors").is_file()
