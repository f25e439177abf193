"""The pack inside a real ComfyUI: it imports cleanly, its nodes are served, the bundled workflows run.

Skipped unless ATELIER_COMFYUI_DIR names a ComfyUI folder with ``main.py`` and ``venv/bin/python`` (the
layout ``shared/tools/comfyui-from-mirror.sh`` makes, with the pack's requirements installed in that venv)
whose ``custom_nodes`` links this checkout. The test starts its own server on a free port (``--cpu``,
temporary input, output, temp and user folders, the sample originals copied to ``input/atelier/originals``,
an extra_model_paths.yaml with a small random checkpoint ComfyUI detects as SD 1.5 and random FID weights),
runs every workflow through it with comfy-cli (ATELIER_COMFY_CLI, else ``comfy`` on PATH), the training
workflow shrunk to a CPU's size, checks what they wrote and stops the server.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import atelier
from atelier.core.dataset import variants

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
ORIGINALS = ROOT / "samples" / "originals"
COMFYUI_DIR = Path(os.environ["ATELIER_COMFYUI_DIR"]).expanduser() if os.environ.get("ATELIER_COMFYUI_DIR") else None
STARTUP_TIMEOUT_S = 300
RUN_TIMEOUT_S = 600  # comfy-cli's per-event timeout
UI_ONLY_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"  # the name train_lora.json asks for
TINY = "tiny"  # the CLIP and BLIP-2 folders the curator workflows are pointed at

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(
        COMFYUI_DIR is None or not (COMFYUI_DIR / "main.py").is_file()
        or not (COMFYUI_DIR / "venv" / "bin" / "python").exists(),
        reason="set ATELIER_COMFYUI_DIR to a ComfyUI folder with main.py and venv/bin/python",
    ),
]


@dataclass
class Server:
    url: str
    host: str
    port: int
    input_dir: Path
    output_dir: Path
    log: Path
    pack_folder: Path  # the custom_nodes entry that is this checkout

    def get(self, route: str, timeout: float = 30) -> Any:
        with urllib.request.urlopen(self.url + route, timeout=timeout) as response:  # noqa: S310 (loopback)
            return json.loads(response.read())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pack_folder(comfyui: Path) -> Path:
    for entry in sorted((comfyui / "custom_nodes").iterdir()):
        if entry.is_dir() and entry.resolve() == ROOT:
            return entry
    pytest.fail(f"no folder in {comfyui / 'custom_nodes'} is this checkout ({ROOT}); link it: "
                f"ln -s {ROOT} {comfyui / 'custom_nodes' / 'comfyui-atelier'}")


def _tail(path: Path, lines: int = 60) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # the server runs in a process group of its own (start_new_session)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _test_models(root: Path) -> Path:
    """An extra_model_paths.yaml naming a checkpoint ComfyUI detects as SD 1.5 (full-size CLIP and VAE with random
    weights, a two-level UNet of SD 1.5's width) and random FID Inception weights under ``atelier_fid``."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from atelier.core.metrics import fid

    from helpers import (
        tiny_adain_files,
        tiny_blip2_folder,
        tiny_clip_folder,
        tiny_owl_folder,
        tiny_sd15_parts,
        tiny_text_tower_folder,
        to_ldm_checkpoint,
    )

    parts = tiny_sd15_parts()
    torch.manual_seed(0)
    parts.unet = UNet2DConditionModel(sample_size=8, layers_per_block=1, block_out_channels=(320, 640),
                                      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=768,
                                      attention_head_dim=8)
    parts.vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                              up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2)
    parts.text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                      num_attention_heads=12, max_position_embeddings=77,
                                                      hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407))
    (root / "checkpoints").mkdir(parents=True)
    state = {k: v.half().contiguous() for k, v in to_ldm_checkpoint(parts).items()}
    save_file(state, str(root / "checkpoints" / CHECKPOINT))
    (root / "fid").mkdir()
    torch.save(fid.FIDInceptionV3().state_dict(), root / "fid" / fid.FID_WEIGHTS_NAME)
    tiny_adain_files(root / "adain", base=8)
    (root / "clip" / TINY).mkdir(parents=True)
    tiny_clip_folder(root / "clip" / TINY)
    (root / "blip2" / TINY).mkdir(parents=True)
    tiny_blip2_folder(root / "blip2" / TINY)
    (root / "detectors" / TINY).mkdir(parents=True)
    tiny_owl_folder(root / "detectors" / TINY)
    tiny_text_tower_folder(root / "text_towers" / TINY)
    _untrained_text_model(root / "seqgan")
    _audio_models(root)
    config = root / "extra_model_paths.yaml"
    config.write_text(f"atelier_test:\n  base_path: {root}\n  checkpoints: checkpoints\n  atelier_fid: fid\n"
                      "  atelier_adain: adain\n  atelier_clip: clip\n  atelier_blip2: blip2\n"
                      "  atelier_seqgan: seqgan\n  atelier_audio_encoders: audio_encoders\n"
                      "  atelier_embedding_adapters: embedding_adapters\n  atelier_detectors: detectors\n"
                      "  atelier_text_towers: text_towers\n",
                      encoding="utf-8")
    return config


def _untrained_text_model(folder: Path) -> None:
    """A text generator with random weights under the name story_strip.json asks for."""
    from atelier.core.story.seqgan_model import Generator, SeqGANConfig
    from atelier.core.story.text_generator import TextGenerator
    from atelier.core.story.text_tokens import build_tokenizer

    tokenizer = build_tokenizer(["a small boat leaves the harbour at dawn.", "the sea is calm and grey."])
    config = SeqGANConfig(vocab_size=len(tokenizer.vocab), max_len=16, emb_dim=8, hidden_dim=8,
                          bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
    TextGenerator(Generator(config), tokenizer).save(folder, "atelier_story")


def _style_inputs(input_dir: Path) -> None:
    """Style and content pictures for Style Augmentation, and the pictures style_transfer.json's Load Image nodes
    name."""
    from PIL import Image

    (input_dir / "atelier" / "styles").mkdir(parents=True)
    for name in ("coffee.webp", "rocket.png"):
        shutil.copy(ORIGINALS / name, input_dir / "atelier" / "styles" / name)
    (input_dir / "atelier" / "content").mkdir(parents=True)  # the photographs painted in the originals' style
    for name in ("chelsea.jpg", "rocket.png"):
        Image.open(ORIGINALS / name).convert("RGB").resize((96, 64)).save(input_dir / "atelier" / "content" / name)
    content = Image.open(ORIGINALS / "chelsea.jpg").convert("RGB").resize((96, 64))
    content.save(input_dir / "atelier_content.png")
    for i, name in enumerate(("coffee.webp", "rocket.png"), 1):
        Image.open(ORIGINALS / name).convert("RGB").resize((64, 64)).save(input_dir / f"atelier_style_{i}.png")
    mask = Image.new("RGB", content.size)
    mask.paste((255, 255, 255), (0, 0, content.width // 2, content.height))
    mask.save(input_dir / "atelier_mask.png")


def _audio_inputs(input_dir: Path) -> None:
    """The sounds audio_to_image.json and sound_to_video.json load: a stereo 44.1 kHz clip and a 24 s recording of
    three sounds; and the video sound_to_video.json edits: 64 x 64, 1 s at 8 fps, with a sound."""
    import numpy as np
    import soundfile

    from helpers import synthetic_picture, synthetic_sound, write_video

    clip = synthetic_sound(4, seconds=3.0, rate=44100)
    soundfile.write(input_dir / "dog_by_stream.wav", np.stack([clip, 0.5 * clip], axis=1), 44100)
    recording = np.concatenate([synthetic_sound(kind, seconds=sec, rate=16000, seed=kind)
                                for kind, sec in ((0, 12), (4, 8), (1, 4))])
    soundfile.write(input_dir / "long_recording.wav", recording, 16000)
    write_video(input_dir / "atelier_video.mkv", [synthetic_picture(k % 6, k, size=64) for k in range(8)], 8,
                synthetic_sound(1, seconds=1.0, rate=16000), 16000)


def _audio_models(root: Path) -> None:
    """An (untrained) audio encoder and embedding adapter for the tiny CLIP's 16-d space, under the names the
    workflow picks."""
    from atelier.core.audio.encoder import AudioEmbedder, AudioEncoder, AudioEncoderConfig, save_audio_encoder
    from atelier.core.sd15.embedding_adapter import AdapterConfig, EmbeddingAdapter, save_adapter

    encoder = AudioEncoder(AudioEncoderConfig(16, widths=(8, 16), blocks_per_stage=1)).eval()
    save_audio_encoder(root / "audio_encoders", "atelier_audio", AudioEmbedder(encoder, TINY, 10.0), {})
    save_adapter(root / "embedding_adapters", "atelier_adapter", EmbeddingAdapter(AdapterConfig(16)), TINY, {})


def _collection_inputs(input_dir: Path) -> None:
    """The collection curate_collection.json reads (with an exact duplicate and a broken file), the dataset
    caption_dataset.json captions, and the artwork its Load Image names."""
    collection = input_dir / "atelier" / "collection"
    shutil.copytree(ORIGINALS, collection)
    shutil.copy(collection / "chelsea.jpg", collection / "chelsea_copy.jpg")
    (collection / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    dataset = input_dir / "atelier" / "dataset"
    dataset.mkdir(parents=True)
    for name in ("chelsea.jpg", "rocket.png"):
        shutil.copy(ORIGINALS / name, dataset / name)
    shutil.copy(ORIGINALS / "coffee.webp", input_dir / "atelier_artwork.png")
    templates = input_dir / "atelier" / "style_templates"  # one template described, one by its file name only
    templates.mkdir(parents=True)
    shutil.copy(ORIGINALS / "chelsea.jpg", templates / "고양이.jpg")
    (templates / "고양이.txt").write_text("a soft photographic study of fur", encoding="utf-8")
    shutil.copy(ORIGINALS / "rocket.png", templates / "rocket.png")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    assert COMFYUI_DIR is not None
    pack_folder = _pack_folder(COMFYUI_DIR)
    base = tmp_path_factory.mktemp("comfyui")
    folders = {name: base / name for name in ("input", "output", "temp", "user")}
    for folder in folders.values():
        folder.mkdir()
    shutil.copytree(ORIGINALS, folders["input"] / "atelier" / "originals")
    _style_inputs(folders["input"])
    _collection_inputs(folders["input"])
    _audio_inputs(folders["input"])
    models = _test_models(base / "models")
    port = _free_port()
    log = base / "server.log"
    command = [
        str(COMFYUI_DIR / "venv" / "bin" / "python"), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
        "--output-directory", str(folders["output"]), "--input-directory", str(folders["input"]),
        "--temp-directory", str(folders["temp"]), "--disable-auto-launch", "--extra-model-paths-config", str(models),
    ]
    # keep the user folder and the database out of the ComfyUI tree, where this ComfyUI has those options
    cli_args = COMFYUI_DIR / "comfy" / "cli_args.py"
    known = cli_args.read_text(encoding="utf-8") if cli_args.exists() else ""
    if '"--user-directory"' in known:
        command += ["--user-directory", str(folders["user"])]
    if '"--database-url"' in known:
        command += ["--database-url", "sqlite:///:memory:"]
    env = {**os.environ, "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(command, cwd=COMFYUI_DIR, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    srv = Server(f"http://127.0.0.1:{port}", "127.0.0.1", port, folders["input"], folders["output"], log, pack_folder)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {proc.returncode} while starting:\n{_tail(log)}")
            try:
                srv.get("/system_stats", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not answer on port {port} within {STARTUP_TIMEOUT_S} s:\n{_tail(log)}")
                time.sleep(0.5)
        yield srv
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def object_info(server: Server) -> dict[str, Any]:
    return server.get("/object_info", timeout=120)


def _comfy_cli() -> str:
    exe = os.environ.get("ATELIER_COMFY_CLI") or shutil.which("comfy")
    if not exe or not os.access(exe, os.X_OK):
        pytest.skip("comfy-cli not found: set ATELIER_COMFY_CLI or put `comfy` on PATH")
    return exe


def test_pack_imports_without_errors(server: Server) -> None:
    log = server.log.read_text(encoding="utf-8", errors="replace")
    folder = str(server.pack_folder)
    failed = [line for line in log.splitlines()
              if folder in line and ("IMPORT FAILED" in line or "Cannot import" in line)]
    assert not failed, "\n".join(failed) + "\n" + _tail(server.log)
    timed = [line for line in log.splitlines() if re.search(r"\d+\.\d+ seconds.*: " + re.escape(folder) + "$", line)]
    assert timed, f"{folder} is not in ComfyUI's list of imported custom nodes:\n{_tail(server.log)}"


def test_every_node_is_served(server: Server, object_info: dict[str, Any]) -> None:
    module = f"custom_nodes.{server.pack_folder.name}"
    for name, cls in atelier.NODE_CLASS_MAPPINGS.items():
        assert name in object_info, f"{name} is missing from GET /object_info"
        info = object_info[name]
        assert info["python_module"] == module, f"{name} comes from {info['python_module']}, not {module}"
        declared = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            assert info["input_order"].get(section, []) == list(declared.get(section, {})), (name, section)
        assert info["output"] == list(cls.RETURN_TYPES), name


def test_korean_interface_is_served(server: Server) -> None:
    # GET /i18n merges every pack's locales/<lang>/main.json with nodeDefs.json under "nodeDefs"
    served = server.get("/i18n")["ko"]
    node_defs = json.loads((ROOT / "locales" / "ko" / "nodeDefs.json").read_text(encoding="utf-8"))
    main = json.loads((ROOT / "locales" / "ko" / "main.json").read_text(encoding="utf-8"))
    assert {k: served["nodeDefs"].get(k) for k in node_defs} == node_defs
    assert {k: served["nodeCategories"].get(k) for k in main["nodeCategories"]} == main["nodeCategories"]


def test_workflows_are_offered_as_templates(server: Server) -> None:
    # ComfyUI's template browser lists custom_nodes/<pack>/{example_workflows,workflows,...}/*.json
    name = server.pack_folder.name
    offered = server.get("/workflow_templates").get(name, [])
    assert sorted(offered) == sorted(p.stem for p in WORKFLOWS), offered
    for path in WORKFLOWS:
        route = f"/api/workflow_templates/{name}/{path.name}"
        try:
            served = server.get(route)
        except urllib.error.HTTPError as e:
            # the route serves only the first of these folders that exists in the pack
            folders = [f for f in ("example_workflows", "example", "examples", "workflow", "workflows")
                       if (ROOT / f).is_dir()]
            pytest.fail(f"GET {route}: HTTP {e.code}; the template browser lists {path.stem} but cannot load it. "
                        f"Template folders in the pack: {folders}; ComfyUI serves the first one only.")
        assert served == json.loads(path.read_text(encoding="utf-8")), path.name


def _weights_needed(workflow: dict[str, Any], object_info: dict[str, Any]) -> list[str]:
    """Nodes of the workflow with a COMBO of files the server has none of (checkpoints, LoRAs, ...)."""
    needs = []
    for node in workflow["nodes"]:
        if node["type"] in UI_ONLY_NODES:
            continue
        info = object_info.get(node["type"])
        assert info is not None, f"node {node['id']}: {node['type']} is not known to the server"
        for section in ("required", "optional"):
            for name, decl in (info["input"].get(section) or {}).items():
                kind, opts = decl[0], (decl[1] if len(decl) > 1 and isinstance(decl[1], dict) else {})
                if (isinstance(kind, list) and not kind) or (kind == "COMBO" and opts.get("options") == []):
                    needs.append(f"{node['type']}.{name}")
    return needs


def _widget_values(node: dict[str, Any]) -> dict[str, Any]:
    """An Atelier node's widget values by input name (the frontend's order: a seed is followed by its control)."""
    spec = atelier.NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()
    names = []
    for section in ("required", "optional"):
        for name, decl in spec.get(section, {}).items():
            opts = decl[1] if len(decl) > 1 else {}
            if isinstance(decl[0], list) or (decl[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")
                                             and not opts.get("forceInput")):
                names.append(name)
                if opts.get("control_after_generate"):
                    names.append(f"{name}#control")
    values = node["widgets_values"]
    assert len(values) == len(names), (node["type"], values, names)
    return dict(zip(names, values))


def _version_folders(parent: Path) -> set[str]:
    return {p.name for p in parent.iterdir() if re.fullmatch(r"v\d{3,}", p.name)} if parent.exists() else set()


def _check_augment_dataset(server: Server, workflow: dict[str, Any], before: dict[str, set[str]]) -> None:
    node = next(n for n in workflow["nodes"] if n["type"] == "AtelierMultiplyDataset")
    w = _widget_values(node)
    parent = server.output_dir / w["subfolder"]
    new = sorted(_version_folders(parent) - before[w["subfolder"]])
    assert len(new) == 1, f"expected one new version folder under {parent}, found {new}"
    if not before[w["subfolder"]]:
        assert new == ["v001"], new
    folder = parent / new[0]
    pngs = sorted(p.name for p in folder.glob("*.png"))
    records = [json.loads(line) for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(pngs), f"{len(records)} manifest lines, {len(pngs)} PNG files in {folder}"
    assert sorted(r["file"] for r in records) == pngs
    originals = sorted(p for p in ORIGINALS.iterdir() if p.suffix.lower() not in (".txt",))
    per_original = int(w["include_original"]) + sum(bool(w[k]) for k in variants.KINDS) + w["random_variants"]
    assert len(pngs) == len(originals) * per_original, (len(pngs), len(originals), per_original)
    assert len({r["stem"] for r in records}) == len(originals)
    for record in records:
        data = (folder / record["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record["sha256"], f"{record['file']}: sha256 differs"
        assert data[:8] == b"\x89PNG\r\n\x1a\n", record["file"]
        if record.get("caption_file"):
            assert (folder / record["caption_file"]).is_file(), record["caption_file"]
    captioned = [p for p in originals if p.with_suffix(".txt").exists()]
    assert sum(1 for r in records if r.get("caption_file")) == len(captioned) * per_original
    assert not list(parent.glob(".partial*")), "a partial folder was left behind"


def _set_widgets(node: dict[str, Any], **values: Any) -> None:
    names = list(_widget_values(node))
    for name, value in values.items():
        node["widgets_values"][names.index(name)] = value


def _cpu_sized_training(workflow: dict[str, Any]) -> None:
    """The training workflows at a size a CPU runs in a few minutes: 64 px, 2 steps, 2-step samplers, one virtual
    picture per original and change, the tiny CLIP and BLIP-2."""
    _tiny_models(workflow)
    for node in workflow["nodes"]:
        if node["type"] == "AtelierVirtualData":
            _set_widgets(node, samples=1, steps=2, width=64, height=64, changes="in a forest\nat night")
        elif node["type"] == "AtelierTrainLoRA":
            _set_widgets(node, steps=2, rank=4, resolution=64, sample_steps=2, mixed_precision="no",
                         gradient_checkpointing=False, name="integration_lora")
        elif node["type"] == "AtelierMultiplyDataset":
            _set_widgets(node, random_variants=0)
        elif node["type"] == "EmptyLatentImage":
            node["widgets_values"] = [64, 64, 2]
        elif node["type"] == "KSampler":
            node["widgets_values"][2] = 2  # sampler steps


def _check_train_lora(server: Server, workflow: dict[str, Any], before: dict[str, set[str]]) -> None:
    from safetensors.torch import load_file

    loras = sorted((COMFYUI_DIR / "models" / "loras").glob("integration_lora*.safetensors"))
    assert loras, "the trainer wrote no LoRA into ComfyUI's loras folder"
    try:
        keys = set(load_file(str(loras[-1])))
        assert any(k.startswith("lora_unet_down_blocks_0_attentions_0_") for k in keys), sorted(keys)[:5]
        assert loras[-1].name in server.get("/object_info/LoraLoader")["LoraLoader"]["input"]["required"][
            "lora_name"][0], "the new LoRA is not in LoraLoader's list"
    finally:
        for path in loras:
            path.unlink()
    assert len(list(server.output_dir.glob("atelier/lora_samples*.png"))) >= 2, "KSampler's samples were not saved"
    fid_node = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "AtelierFID")
    texts = [run["outputs"].get(fid_node, {}).get("text") for run in server.get("/history").values()]
    assert any(t and "FID" in t[0] for t in texts), texts
    assert any(t and "IS " in t[0] for t in texts), texts
    styled = _version_folders(server.output_dir / "atelier" / "styled")
    assert styled, "Style Augmentation wrote no version folder"
    newest = server.output_dir / "atelier" / "styled" / max(styled)
    assert len(list(newest.glob("*__in_*.png"))) == 2 * 4, "expected 2 content pictures x 4 originals' styles"
    drawn = _newest_virtual_data(server)
    assert len(list(drawn.glob("*__in_a_forest_01.png"))) == 4 and not list(drawn.glob("chelsea.png"))
    multiplied = server.output_dir / "atelier" / "augmented" / max(_version_folders(
        server.output_dir / "atelier" / "augmented"))
    pictures = sorted(multiplied.glob("*.png"))
    assert any("__in_" in p.name for p in pictures) and any("__in_a_forest_" in p.name for p in pictures)
    assert all(p.with_suffix(".txt").is_file() for p in pictures), "Caption Dataset left pictures uncaptioned"


def _newest_virtual_data(server: Server) -> Path:
    drawn = _version_folders(server.output_dir / "atelier" / "virtual")
    assert drawn, "Virtual Data wrote no version folder"
    return server.output_dir / "atelier" / "virtual" / max(drawn)


def _check_first_lora(server: Server, workflow: dict[str, Any], before: dict[str, set[str]]) -> None:
    loras = sorted((COMFYUI_DIR / "models" / "loras").glob("integration_lora*.safetensors"))
    try:
        assert len(loras) == 2, f"expected the first and the second LoRA, found {[p.name for p in loras]}"
    finally:
        for path in loras:
            path.unlink()
    drawn = _newest_virtual_data(server)
    assert len(list(drawn.glob("*__at_night_01.png"))) == 4 and (drawn / "chelsea.png").is_file()
    record = json.loads((drawn / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert record["parameters"]["adapter"] is None and record["parameters"]["prompt"].startswith("atl, ")
    assert sorted(server.output_dir.glob("atelier/first_lora_samples*.png")), "KSampler's samples were not saved"


def _check_style_transfer(server: Server, workflow: dict[str, Any], before: dict[str, set[str]]) -> None:
    from PIL import Image

    saved = sorted(server.output_dir.glob("atelier/stylized*.png"))
    assert saved, "the stylized picture was not saved"
    assert Image.open(saved[-1]).size == (96, 64), "the stylized picture lost the content's size"


def _tiny_models(workflow: dict[str, Any]) -> None:
    """The curator workflows on the tiny CLIP and BLIP-2 folders the server has; no keep rule, since a random
    CLIP's labels say nothing (the near-duplicate and the broken file are still dropped)."""
    for node in workflow["nodes"]:
        if node["type"] in ("AtelierLoadCLIP", "AtelierLoadBLIP2", "AtelierLoadDetector"):
            _set_widgets(node, model=TINY)
        if node["type"] == "AtelierCurateFolder":
            _set_widgets(node, keep="")


def _check_curate_collection(server: Server, workflow: dict[str, Any], before: dict[str, set[str]]) -> None:
    curated = server.output_dir / "atelier" / "curated"
    versions = sorted(_version_folders(curated))
    assert versions, f"no version folder under {curated}"
    folder = curated / versions[-1]
    kept = sorted(p.name for p in folder.iterdir() if p.suffix in (".jpg", ".png", ".webp", ".tif"))
    assert "broken.png" not in kept and not {"chelsea.jpg", "chelsea_copy.jpg"} <= set(kept), kept
    report = json.loads((folder / "curation_report.json").read_text(encoding="utf-8"))
    assert any(d["reason"].startswith("near-duplicate") for d in report["dropped"]), report
    assert any(s["file"].endswith("broken.png") for s in report["skipped"]), report
    assert all((folder / name).with_suffix(".txt").is_file() for name in kept), "captions missing"
    records = (folder / "curation.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(records) == len(kept) and (folder / "curation.md").is_file()
    analyses = [json.loads(line) for line in (folder / "analyses.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(a["file"] for a in analyses) == kept
    for record in analyses:  # colour, emotion, style and space (captions and the spaces taxonomy) in the folder row
        assert all(record[k] for k in ("colour", "emotion", "style", "space")), record
        assert record["objects"] is None and record["intent"] is None  # no detector there, no metadata file
        assert {m["template"] for m in record["style"]["matches"]} == {"고양이.jpg", "rocket.png"}
    outputs = next(run for run in server.get("/history").values()  # the run of this workflow: the only one with
                   if any(n.get("class_type") == "AtelierAnalyseFolder" for n in run["prompt"][2].values()))
    titled = {str(n["id"]): n.get("title") for n in workflow["nodes"]}
    shown = {titled[k]: v for k, v in outputs["outputs"].items()}
    for title in ("Palette", "Emotion circle", "Style match", "Objects"):
        assert shown[title]["images"], (title, shown.get(title))
    for title in ("Intent", "Space from the text", "Analyses"):
        assert shown[title]["text"], (title, shown.get(title))


def _check_caption_dataset(server: Server, workflow: dict[str, Any], before: dict[str, set[str]]) -> None:
    dataset = server.input_dir / "atelier" / "dataset"
    for name in ("chelsea", "rocket"):
        caption = (dataset / f"{name}.txt").read_text(encoding="utf-8")
        assert caption.startswith("atelier_style"), caption


OUTPUT_CHECKS = {"augment_dataset.json": _check_augment_dataset, "train_lora.json": _check_train_lora,
                 "style_transfer.json": _check_style_transfer, "curate_collection.json": _check_curate_collection,
                 "caption_dataset.json": _check_caption_dataset}
def _cpu_sized_story(workflow: dict[str, Any]) -> None:
    """story_strip.json at a CPU's size: 64 px panels, two sampler steps, three lines, the tiny CLIP."""
    for node in workflow["nodes"]:
        if node["type"] == "EmptyLatentImage":
            node["widgets_values"][:2] = [64, 64]
        if node["type"] == "AtelierLoadCLIP":
            _set_widgets(node, model=TINY)
        if node["type"] == "AtelierStoryPanelGuides":
            _set_widgets(node, width=64, height=64)
        if node["type"] == "KSampler":
            node["widgets_values"][2] = 2
        if node["type"] == "AtelierContinueStory":
            _set_widgets(node, sentences=3)


def _check_story_strip(server: Server, workflow: dict[str, Any], before: dict[str, set[str]]) -> None:
    from PIL import Image

    for prefix in ("story_0", "story_guided_"):  # the strip drawn from the text alone, and the retrieval-guided one
        saved = sorted(server.output_dir.glob(f"atelier/{prefix}*.png"))
        assert saved, f"the strip atelier/{prefix}*.png was not saved"
        strip = Image.open(saved[-1])
        assert strip.width == 800 and strip.height > 3 * (800 - 64), strip.size  # three square panels stacked
    panels = sorted(server.output_dir.glob("atelier/story_panels/panel*.png"))
    assert len(panels) >= 3 and Image.open(panels[-1]).size == (64, 64), panels
    outputs = next(run for run in server.get("/history").values()
                   if any(n.get("class_type") == "AtelierStoryPanelGuides" for n in run["prompt"][2].values()))
    titled = {str(n["id"]): n.get("title") for n in workflow["nodes"]}
    matched = {titled[k]: v for k, v in outputs["outputs"].items()}["Matched pictures"]["text"][0]
    assert len({row.split("\t")[2] for row in matched.splitlines()[:3]}) == 3, matched  # distinct pictures


def _cpu_sized_audio(workflow: dict[str, Any]) -> None:
    """audio_to_image.json at a CPU's size: 64 px, two sampler steps, 4 s segments overlapping by 2 s."""
    for node in workflow["nodes"]:
        if node["type"] == "EmptyLatentImage":
            node["widgets_values"][:2] = [64, 64]
        if node["type"] == "KSampler":
            node["widgets_values"][2] = 2
        if node["type"] == "AtelierAudioThumbnails":
            _set_widgets(node, segment_seconds=4.0, overlap_seconds=2.0, clusters=3)


def _check_audio_to_image(server: Server, workflow: dict[str, Any], before: dict[str, set[str]]) -> None:
    assert sorted(server.output_dir.glob("atelier/audio_0*.png")), "the picture from sound was not saved"
    assert len(sorted(server.output_dir.glob("atelier/audio_clusters*.png"))) >= 3, "one picture per cluster"
    assert sorted(server.output_dir.glob("atelier/audio_thumbnail*.png")), "the thumbnail was not saved"
    assert sorted(server.output_dir.glob("atelier/audio_position*.png")), "the picture placed by the sound's pan"


def _cpu_sized_sound_video(workflow: dict[str, Any]) -> None:
    """sound_to_video.json at a CPU's size: the tiny CLIP, 64 px, 4 frames (1 s at 4 fps), two sampler steps."""
    for node in workflow["nodes"]:
        if node["type"] == "AtelierLoadCLIP":
            _set_widgets(node, model=TINY)
        if node["type"] == "AtelierSoundToVideoFrames":
            _set_widgets(node, width=64, height=64)
        if node["type"] in ("AtelierSoundToVideoFrames", "AtelierVideoSoundEdit"):
            _set_widgets(node, fps=4.0, max_seconds=1.0, steps=2)


def _check_sound_to_video(server: Server, workflow: dict[str, Any], before: dict[str, set[str]]) -> None:
    import av

    for prefix in ("sound_video", "video_sound_edit"):
        videos = sorted(server.output_dir.glob(f"atelier/{prefix}*.mp4"))
        assert videos, f"no atelier/{prefix}*.mp4 was saved"
        with av.open(str(videos[-1])) as video:
            assert video.streams.audio, f"{videos[-1].name} has no sound"
            frames = list(video.decode(video=0))
        assert len(frames) == 4 and frames[0].width == 64, (videos[-1].name, len(frames), frames[0].width)


def _cpu_sized_bilingual(workflow: dict[str, Any]) -> None:
    for node in workflow["nodes"]:
        if node["type"] == "AtelierBuildDualEncoder":
            _set_widgets(node, text_model=TINY, vision_model=TINY, projection_dim=16)
        elif node["type"] == "AtelierFineTuneImageTextEncoder":
            _set_widgets(node, epochs=2, batch_size=2, learning_rate=1e-3)


def _check_bilingual(server: Server, workflow: dict[str, Any], before: dict[str, set[str]]) -> None:
    from atelier.core.curator.clip_model import load_clip

    saved = sorted((server.output_dir.parent / "models" / "clip").glob("ko-en-clip*"))
    assert saved, "the fine-tuned encoder was not saved in models/atelier/clip"
    encoder = load_clip(saved[-1])
    assert encoder.kind == "vision-text-dual-encoder" and encoder.languages == ("en", "ko") and encoder.dim == 16


OUTPUT_CHECKS["bilingual_retrieval.json"] = _check_bilingual
OUTPUT_CHECKS["story_strip.json"] = _check_story_strip
OUTPUT_CHECKS["audio_to_image.json"] = _check_audio_to_image
OUTPUT_CHECKS["virtual_data_first_lora.json"] = _check_first_lora
OUTPUT_CHECKS["sound_to_video.json"] = _check_sound_to_video
CPU_SIZED = {"train_lora.json": _cpu_sized_training, "virtual_data_first_lora.json": _cpu_sized_training,
             "curate_collection.json": _tiny_models,
             "caption_dataset.json": _tiny_models, "story_strip.json": _cpu_sized_story,
             "audio_to_image.json": _cpu_sized_audio, "sound_to_video.json": _cpu_sized_sound_video,
             "bilingual_retrieval.json": _cpu_sized_bilingual}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_runs(path: Path, server: Server, object_info: dict[str, Any]) -> None:
    workflow = json.loads(path.read_text(encoding="utf-8"))
    needs = _weights_needed(workflow, object_info)
    if needs:
        pytest.skip(f"{path.name} needs model weights ({', '.join(sorted(set(needs)))})")
    comfy = _comfy_cli()
    if path.name in CPU_SIZED:
        CPU_SIZED[path.name](workflow)
        path = server.output_dir.parent / path.name
        path.write_text(json.dumps(workflow), encoding="utf-8")
    subfolders = [_widget_values(n)["subfolder"] for n in workflow["nodes"] if n["type"] == "AtelierMultiplyDataset"]
    before = {s: _version_folders(server.output_dir / s) for s in subfolders}
    history_before = set(server.get("/history"))
    command = [comfy, "--skip-prompt", "--no-json", "run", "--workflow", str(path), "--wait", "--where", "local",
               "--host", server.host, "--port", str(server.port), "--timeout", str(RUN_TIMEOUT_S)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "DO_NOT_TRACK": "1"},
                            timeout=3 * RUN_TIMEOUT_S, cwd=ROOT)
    report = (f"{' '.join(command)}\nrc {result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}\n"
              "--- server log ---\n")
    assert result.returncode == 0, report + _tail(server.log)
    history = server.get("/history")
    runs = [history[k] for k in history if k not in history_before]
    assert runs, report + "no new prompt in /history\n" + _tail(server.log)
    for run in runs:
        status = run.get("status", {})
        assert status.get("status_str") == "success" and status.get("completed"), (
            report + json.dumps(status, indent=1)[:4000] + "\n" + _tail(server.log))
    if path.name in OUTPUT_CHECKS:
        OUTPUT_CHECKS[path.name](server, workflow, before)
