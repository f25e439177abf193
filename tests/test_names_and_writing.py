"""Names and writing: Unicode names, stem clashes, kills during a save, leftovers of killed runs, the umask,
UTF-8 manifests and greyscale captions. Every bad input is made here, in tmp_path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.core.captions import blip2
from atelier.core.dataset import multiply, variants
from atelier.core.dataset.writer import DatasetWriter
from atelier.core.shared.output_paths import clean_name, safe_name, safe_subfolder, unique_stems, write_text_atomic
from atelier.core.shared.state_dicts import IncompleteFile, read_tagged, read_weights, save_new_file, write_safetensors

ROOT = Path(__file__).resolve().parents[1]


def _png(path: Path, value: int, size: tuple[int, int] = (12, 8)) -> Path:
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, format="PNG")
    return path


def _original(stem: str, value: int, caption: str | None = None, side: int = 8) -> multiply.Original:
    rng = np.random.default_rng(value)
    return multiply.Original(torch.from_numpy(rng.random((side, side + 4, 3), dtype=np.float32)), stem, caption, stem)


# --------------------------------------------------------------------------------------------
# Names (issue 15, item 2)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "cleaned"), [
    ("고양이", "고양이"),
    (unicodedata.normalize("NFD", "고양이"), "고양이"),  # macOS spells Hangul decomposed: stored composed
    ("cafe\u0301 au lait", "café_au_lait"),
    ("이야기 (최종)", "이야기_최종"),
    ("a:b*c?d", "a_b_c_d"),
    ("tab\there\x00nul\x1f", "tab_here_nul"),
    ("\u202eevil", "evil"),  # a right-to-left override is not a letter
    ("..", ""), (".", ""), ("★☆", ""), ("  ...  ", ""),
    ("a..b", "a_b"), (" trailing dots... ", "trailing_dots"),
    ("CON", "CON_"), ("nul.tar", "nul_.tar"), ("Lpt9", "Lpt9_"), ("console", "console"),
    ("photo-1_v2.final+b", "photo-1_v2.final+b"),  # ASCII names are what they always were
])
def test_clean_name_keeps_unicode_letters_and_refuses_the_rest(name: str, cleaned: str) -> None:
    assert clean_name(name) == cleaned


def test_a_long_korean_name_fits_a_file_system_name() -> None:
    cleaned = clean_name("가" * 200)
    assert cleaned == "가" * 40 and len((cleaned + "__saturation_down_12.png").encode()) < 255


def test_safe_name_refuses_paths_and_falls_back_when_nothing_is_left() -> None:
    assert safe_name("이야기", "model name") == "이야기"
    assert safe_name("★★★", "model name") == "unnamed"
    for bad in ("a/b", "a\\b", "..", "../up"):
        with pytest.raises(ValueError, match="may not contain"):
            safe_name(bad, "model name")
    assert safe_subfolder(Path("/out"), "큐레이션/거실") == Path("/out/큐레이션/거실")


def test_unique_stems_number_unusable_names_by_position() -> None:
    assert unique_stems(["고양이", ".", "★", "b"]) == ["고양이", "image_0002", "image_0003", "b"]


def test_convert_and_multiply_keep_korean_names_and_number_unusable_ones(tmp_path: Path) -> None:
    source = tmp_path / "원본"
    source.mkdir()
    _png(source / "고양이.png", 1)
    _png(source / "..png", 2)
    _png(source / "★.png", 3)
    (source / "고양이.txt").write_text("a red cat on a blue sofa", encoding="utf-8")
    assert main(["convert", str(source), "--output", str(tmp_path / "out")]) == 0
    converted = tmp_path / "out" / "atelier" / "png" / "v001"
    assert sorted(p.name for p in converted.glob("*.png")) == ["image_0001.png", "image_0002.png", "고양이.png"]
    assert main(["multiply", str(source), "--output", str(tmp_path / "out"), "--subfolder", "증강",
                 "--variants", "gray_scale,vertical_flip"]) == 0
    folder = tmp_path / "out" / "증강" / "v001"
    assert (folder / "고양이__gray_scale.png").is_file() and (folder / "image_0002__vertical_flip.png").is_file()
    manifest = (folder / "manifest.jsonl").read_text(encoding="utf-8")
    assert '"file": "고양이.png"' in manifest and "\\u" not in manifest  # UTF-8, not escapes
    # item 24: the greyscale copy's caption loses its colour words; the others keep the caption
    assert (folder / "고양이__gray_scale.txt").read_text(encoding="utf-8") == "a cat on a sofa\n"
    assert (folder / "고양이__vertical_flip.txt").read_text(encoding="utf-8") == "a red cat on a blue sofa\n"


@pytest.mark.parametrize(("caption", "grey"), [
    ("a red barn, blue sky and a black cat", "a barn, sky and a black cat"),
    ("sks_style, Golden hour in a green forest", "sks_style, hour in a forest"),
    ("빨간 사과와 검은 고양이", "사과와 검은 고양이"),
    ("red, green", ""),
    ("a white house", "a white house"),
])
def test_greyscale_captions_drop_colour_words(caption: str, grey: str) -> None:
    assert variants.without_colour_words(caption) == grey


def test_random_variants_drawn_grey_drop_colour_words_too(tmp_path: Path) -> None:
    from atelier.core.dataset.augment import AugmentSpec

    random = multiply.RandomVariants(AugmentSpec(grayscale=1.0), 1, seed=0)
    written = multiply.multiply([_original("a", 1, "a red cat")], tmp_path, kinds=(), random=random)
    assert (written.folder / "a__random_01.txt").read_text(encoding="utf-8") == "a cat\n"
    assert (written.folder / "a.txt").read_text(encoding="utf-8") == "a red cat\n"


def test_text_train_refuses_a_bad_name_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a boat on the sea.\n" * 8, encoding="utf-8")
    run = tmp_path / "run"
    assert main(["text-train", str(corpus), "--out-dir", str(tmp_path / "models"), "--run", str(run),
                 "--name", "stories/이야기"]) == 2
    assert "may not contain" in capsys.readouterr().err
    assert not run.exists()  # refused before any training


# --------------------------------------------------------------------------------------------
# Stem clashes (item 3)
# --------------------------------------------------------------------------------------------

def test_multiply_gives_every_picture_its_own_files(tmp_path: Path) -> None:
    stems = ["a", "a", "a_2", "A", "a__gray_scale"]
    originals = [_original(s, i, f"caption {i}") for i, s in enumerate(stems)]
    written = multiply.multiply(originals, tmp_path, kinds=("gray_scale",))
    names = [p.name for p in written.files]
    assert len(names) == 10 and len({n.casefold() for n in names}) == 10
    by_stem: dict[str, set[str]] = {}
    for record in written.records:
        caption = (written.folder / str(record["caption_file"])).read_text(encoding="utf-8")
        by_stem.setdefault(str(record["stem"]), set()).add(caption)
    assert sorted(len(c) for c in by_stem.values()) == [1] * 5  # each picture and its variant: one caption
    assert {c.pop() for c in by_stem.values()} == {f"caption {i}\n" for i in range(5)}


def test_the_dataset_writer_refuses_a_name_given_twice(tmp_path: Path) -> None:
    image = Image.new("RGB", (4, 4))
    with DatasetWriter(tmp_path) as writer:
        writer.add_image(image, "a", None, {})
        with pytest.raises(ValueError, match="would both be written as 'A'"):
            writer.add_image(image, "A", None, {})


def test_caption_dataset_refuses_pictures_sharing_a_sidecar_and_the_advice_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _png(tmp_path / "a.jpg", 1)
    _png(tmp_path / "a.tif", 2)
    _png(tmp_path / "b.png", 3)
    monkeypatch.setattr(blip2, "caption_images",
                        lambda blip, images, settings, batch_size: [f"picture {i}" for i in range(len(images))])
    settings = blip2.CaptionSettings()
    with pytest.raises(ValueError, match=r"a\.jpg and a\.tif .* would share a\.txt.*a\.tif to a_2\.tif"):
        blip2.caption_folder(None, tmp_path, settings)
    assert not list(tmp_path.glob("*.txt"))  # refused before any caption was written
    (tmp_path / "a.tif").rename(tmp_path / "a_2.tif")  # what the message says
    killed = tmp_path / f".b.txt.{_dead_pid()}.0123abcd.part"  # a caption a killed run was writing
    killed.write_text("half", encoding="utf-8")
    report = blip2.caption_folder(None, tmp_path, settings)
    assert sorted(p.name for p in report.written) == ["a.txt", "a_2.txt", "b.txt"]
    assert not killed.exists()


def test_the_caption_command_refuses_shared_sidecars_before_looking_for_a_model(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _png(tmp_path / "a.jpg", 1)
    _png(tmp_path / "A.tif", 2)
    assert main(["caption", str(tmp_path), "--blip2", str(tmp_path / "no-such-model")]) == 2
    error = capsys.readouterr().err
    assert "a.jpg and A.tif" in error and "no-such-model" not in error


def test_style_augmentation_gives_every_pair_its_own_file(tmp_path: Path) -> None:
    from atelier.core.style import adain_model, style_augment

    from helpers import tiny_adain_files

    model = adain_model.load_model(*tiny_adain_files(tmp_path / "adain"))
    originals = [_original("a", 1, "one", 16), _original("a", 2, "two", 16), _original("a__style_b", 3, "three", 16)]
    styles = [_original(n, 4, side=16) for n in ("b", "b", "★")]
    written = style_augment.style_augment(model, originals, styles, tmp_path / "styled",
                                          spec=style_augment.AugmentSpec("restyle_originals"))
    names = [p.name for p in written.files]
    assert len(names) == 3 + 9 and len(set(names)) == 12
    assert "a_2__style_b_2.png" in names and "a__style_style_0003.png" in names
    # in the originals' style: content pictures named like an original, or like a virtual picture
    contents = [_original(n, 5, side=16) for n in ("a", "b__in_a", "B")]
    written = style_augment.style_augment(model, originals[:2], contents, tmp_path / "styled")
    names = [p.name for p in written.files]
    assert len(names) == 2 + 6 and len({n.casefold() for n in names}) == 8


# --------------------------------------------------------------------------------------------
# Kills during a save and what they leave (item 5)
# --------------------------------------------------------------------------------------------

def _dead_pid() -> int:
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                             text=True, check=True)
    return int(process.stdout)


KILLED_SAVE = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from atelier_cli import load_pack
load_pack()
import safetensors.torch, torch
from atelier.core.shared.state_dicts import save_new_file

def dies_half_way(tensors, filename, metadata=None):
    Path(filename).write_bytes(b"\\0" * 1000)  # part of the file, then the kill
    os.kill(os.getpid(), signal.SIGKILL)

safetensors.torch.save_file = dies_half_way
save_new_file(Path(sys.argv[2]), "lora", {"w": torch.ones(4)}, {"atelier_kind": "test"})
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_a_kill_during_the_save_leaves_nothing_that_looks_like_a_model(tmp_path: Path) -> None:
    models = tmp_path / "loras"
    killed = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(ROOT), str(models)], capture_output=True)
    assert killed.returncode == -9
    left = list(models.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".") and left[0].suffix == ".part"
    assert not list(models.glob("*.safetensors"))  # ComfyUI lists nothing
    path = save_new_file(models, "lora", {"w": torch.ones(4)}, {"atelier_kind": "test"})
    assert path.name == "lora.safetensors"  # the name was never taken
    assert [p.name for p in models.iterdir()] == ["lora.safetensors"]  # the next run cleaned up
    assert torch.equal(read_weights(path, "LoRA")["w"], torch.ones(4))


def test_stale_temporary_files_go_and_live_ones_stay(tmp_path: Path) -> None:
    dead, live = _dead_pid(), os.getpid()
    stale = tmp_path / f".m.safetensors.{dead}.0123abcd.part"
    working = tmp_path / f".m.safetensors.{live}.89abcdef.part"
    old = tmp_path / ".m.safetensors.x9y8z7.part"  # an older version's temporary name, a day old
    for path in (stale, working, old):
        path.write_bytes(b"x")
    os.utime(old, (1, 1))
    save_new_file(tmp_path, "m", {"w": torch.zeros(2)}, {})
    assert not stale.exists() and not old.exists() and working.exists()


def test_partial_version_folders_of_killed_runs_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f".partial.{_dead_pid()}.0123abcd"
    old = tmp_path / ".partial-k2j3h4"  # as earlier versions named it
    mine = tmp_path / f".partial.{os.getpid()}.89abcdef"
    for folder in (dead, old, mine):
        folder.mkdir()
        _png(folder / "x.png", 1)
    os.utime(old, (1, 1))
    written = multiply.multiply([_original("a", 1)], tmp_path, kinds=())
    assert not dead.exists() and not old.exists() and mine.exists()
    assert written.folder.name == "v001"


def test_an_empty_or_cut_short_weights_file_reads_as_missing_with_its_name(tmp_path: Path) -> None:
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    whole = tmp_path / "whole.safetensors"
    write_safetensors(whole, {"w": torch.ones(64)}, {"atelier_kind": "test"})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:-10])
    from atelier.core.sd15.lora_file import read_lora

    for reader in (lambda p: read_weights(p, "LoRA"), lambda p: read_tagged(p, "test", "LoRA", "train one")[1],
                   lambda p: read_lora(p)[0]):
        with pytest.raises(IncompleteFile, match=r"empty\.safetensors' is empty \(0 bytes\).*Delete it"):
            reader(empty)
        with pytest.raises(IncompleteFile, match=r"cut\.safetensors' is cut short \(\d+ of \d+ bytes\)"):
            reader(cut)
        assert torch.equal(reader(whole)["w"], torch.ones(64))
    pth = tmp_path / "empty.pth"
    pth.write_bytes(b"")
    with pytest.raises(IncompleteFile, match="is empty"):
        read_weights(pth, "decoder")


def test_save_new_file_takes_unicode_names_and_never_replaces(tmp_path: Path) -> None:
    first = save_new_file(tmp_path, "이야기", {"w": torch.ones(2)}, {})
    second = save_new_file(tmp_path, "이야기", {"w": torch.zeros(2)}, {})
    symbols = save_new_file(tmp_path, "★★", {"w": torch.zeros(2)}, {})
    assert (first.name, second.name, symbols.name) == ("이야기.safetensors", "이야기_2.safetensors",
                                                       "unnamed.safetensors")
    assert torch.equal(read_weights(first, "model")["w"], torch.ones(2))


# --------------------------------------------------------------------------------------------
# The umask (item 12)
# --------------------------------------------------------------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
@pytest.mark.parametrize(("umask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_follow_the_umask(tmp_path: Path, umask: int, file_mode: int, folder_mode: int) -> None:
    from atelier.training import checkpoints

    def mode(path: Path) -> int:
        return path.stat().st_mode & 0o777

    previous = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "caption.txt", "text")
        write_safetensors(tmp_path / "cache.safetensors", {"w": torch.ones(2)}, {})
        model = save_new_file(tmp_path / "models", "m", {"w": torch.ones(2)}, {})
        written = multiply.multiply([_original("a", 1, "cap")], tmp_path / "data", kinds=())
        checkpoints.save(tmp_path / "run" / "checkpoint", {"model": {"w": torch.ones(2)}})
    finally:
        os.umask(previous)
    files = [tmp_path / "caption.txt", tmp_path / "cache.safetensors", model, *written.files, written.manifest,
             written.folder / "a.txt", *(tmp_path / "run" / "checkpoint").iterdir()]
    assert {p.name: mode(p) for p in files} == {p.name: file_mode for p in files}
    for folder in (written.folder, tmp_path / "run" / "checkpoint"):
        assert mode(folder) == folder_mode, folder
    assert json.loads(written.manifest.read_text(encoding="utf-8").splitlines()[0])["file"] == "a.png"
