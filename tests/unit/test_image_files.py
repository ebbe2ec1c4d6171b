"""Decoding image folders: every PIL mode a photo folder holds, EXIF orientation, reduced-size JPEG
decoding, corrupt files (an error naming them, or skipped and counted), stream=auto's memory budget."""

import numpy as np
import pytest
import torch
from helpers import write_jpeg_folder as write_folder
from PIL import Image

from cnnlab.data.batches import batches
from cnnlab.data.decode import decode_image
from cnnlab.data.sources import FileSplit, Split, load_imagefolder
from cnnlab.errors import DataError


def loader(root, **options) -> dict:
    """load_imagefolder's arguments as configs/dataset/imagefolder.yaml sets them, with `options`."""
    defaults = dict(
        root=str(root), image_size=[8, 8], channels=3, cache_dir=str(root / "cache"), stream=False,
        workers=0, memory_budget=0.25, skip_unreadable=False,
    )  # fmt: skip
    return {**defaults, **options}


def test_every_mode_decodes_to_8_bit_rgb_or_grey(tmp_path):
    red = np.zeros((6, 6, 3), np.uint8)
    red[..., 0] = 200
    cases = {
        "grey.png": (Image.fromarray(np.full((6, 6), 90, np.uint8)), (90, 90, 90)),
        "rgb.jpg": (Image.fromarray(red), (200, 0, 0)),
        "cmyk.jpg": (Image.new("CMYK", (6, 6), (0, 255, 255, 0)), (255, 0, 0)),
        "palette.png": (Image.fromarray(red).convert("P"), (200, 0, 0)),
        # 16-bit: 40000 of 65535 is 156 of 255 (PIL's own convert would clip it to 255).
        "deep.png": (Image.fromarray(np.full((6, 6), 40000, np.uint16)), (156, 156, 156)),
        # Transparent pixels keep junk colour underneath: they are shown, and decoded, as white.
        "clear.png": (Image.fromarray(np.dstack([red, np.zeros((6, 6), np.uint8)]), "RGBA"), (255, 255, 255)),
    }
    for name, (image, want) in cases.items():
        image.save(tmp_path / name)
        decoded = decode_image(tmp_path / name, [4, 4], 3)
        assert decoded.dtype == torch.uint8 and decoded.shape == (3, 4, 4), name
        got = decoded.float().mean(dim=(1, 2))
        assert torch.allclose(got, torch.tensor(want, dtype=torch.float32), atol=3), (name, got)
    grey = decode_image(tmp_path / "rgb.jpg", [4, 4], 1)
    assert grey.shape == (1, 4, 4) and abs(float(grey.float().mean()) - 0.299 * 200) < 3


def test_exif_orientation_is_applied(tmp_path):
    # A landscape photo stored with "rotate 90° clockwise to view" (orientation 6): seen as portrait.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # the left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    upright = decode_image(tmp_path / "rotated.jpg", [40, 20], 1)[0].float()  # portrait: 40 high, 20 wide
    assert upright[:18].mean() > 200 and upright[22:].mean() < 50  # the white half is now on top


def test_reduced_size_jpeg_decoding_matches_a_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (12, 16, 3)), np.ones((50, 50, 1))).astype(np.uint8)  # 600×800
    Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=95)
    fast = decode_image(tmp_path / "big.jpg", [48, 64], 3).float()
    with Image.open(tmp_path / "big.jpg") as image:  # a full-size decode, then the same resize
        full = np.asarray(image.convert("RGB").resize((64, 48), Image.BILINEAR))
    full = torch.from_numpy(full.copy()).permute(2, 0, 1).float()
    assert (fast - full).abs().mean() < 4  # of 255: the same picture


@pytest.mark.parametrize("stream", [False, True])
def test_unreadable_files_are_skipped_and_counted_when_asked(tmp_path, stream):
    write_folder(tmp_path / "img", broken=2)
    data = load_imagefolder(**loader(tmp_path / "img", stream=stream, skip_unreadable=True))
    assert len(data.train) == 6 and len(data.val) == 4
    assert data.train.labels.tolist() == [0, 0, 1, 1, 1, 1]
    images = torch.cat([images for images, _ in batches(data.train, 4)])
    assert images.shape == (6, 3, 8, 8)
    (note,) = [note for note in data.notes if "skipped" in note]
    assert note.startswith(f"imagefolder: skipped 2 unreadable image(s) under {tmp_path / 'img' / 'train'}")
    assert f"cannot read image {tmp_path / 'img' / 'train' / 'a' / '0.jpg'}" in note


def test_an_unreadable_file_is_otherwise_one_error_naming_it(tmp_path):
    write_folder(tmp_path / "img", broken=1)
    with pytest.raises(DataError) as error:
        load_imagefolder(**loader(tmp_path / "img", workers=2))
    assert str(error.value).startswith(f"cannot read image {tmp_path / 'img' / 'train' / 'a' / '0.jpg'}: ")


def test_stream_auto_decodes_into_memory_within_the_budget_and_streams_beyond_it(tmp_path):
    write_folder(tmp_path / "img")
    fits = load_imagefolder(**loader(tmp_path / "img", stream="auto"))
    assert isinstance(fits.train, Split) and "decoded into memory" in fits.notes[0]
    # 12 images of 8×8×3 bytes, the 8 training ones twice (the epoch's gather): 20 × 192 B.
    assert fits.notes[0].startswith(
        "imagefolder: 12 images at 8×8 need 3.8 KB decoded (training images twice)"
    )
    too_big = load_imagefolder(**loader(tmp_path / "img", stream="auto", memory_budget=1e-12))
    assert (
        isinstance(too_big.train, FileSplit) and "over dataset.loader.memory_budget=1e-12" in too_big.notes[0]
    )
    assert torch.equal(torch.cat([i for i, _ in batches(too_big.train, 5)]), fits.train.images)


def test_decoding_with_workers_leaves_the_global_rng_alone(tmp_path):
    write_folder(tmp_path / "img")
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    data = load_imagefolder(**loader(tmp_path / "img", workers=2))
    streamed = load_imagefolder(**loader(tmp_path / "img", stream=True, workers=2))
    list(batches(streamed.train, 4))
    assert len(data.train) == 8 and torch.equal(torch.rand(3), want)  # the model's init is the seed's


def test_streamed_workers_serve_every_epoch(tmp_path):
    write_folder(tmp_path / "img")
    split = load_imagefolder(**loader(tmp_path / "img", stream=True, workers=2)).train
    first = [images for images, _ in batches(split, 3, torch.arange(8))]
    workers = split.reader._loader._iterator._workers  # the worker processes of the first pass
    again = [images for images, _ in batches(split, 3, torch.arange(8).flip(0))]
    assert split.reader._loader._iterator._workers == workers and all(w.is_alive() for w in workers)
    assert torch.equal(torch.cat(again), torch.cat(first).flip(0))


def test_a_folder_without_images_says_what_it_found(tmp_path):
    (tmp_path / "img" / "train" / "a").mkdir(parents=True)
    (tmp_path / "img" / "train" / "a" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"no images found under .*; found only \.txt files; images end in"):
        load_imagefolder(**loader(tmp_path / "img"))
