"""The wan model table and what hangs off it: params checked per model (and agreeing with the fake's
own rules), explicit low-cost defaults, prompt cuts, first frames made fit, usage in both shapes,
and a unit that was edited after its job was made."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dropflow.engine.errors import InputError
from dropflow.engine.fakes import wan_models as fake
from dropflow.engine.providers.base import VideoGenRequest
from dropflow.engine.videogen.image import prepare_image
from dropflow.engine.videogen.job import VideoSpec, read_spec
from dropflow.engine.videogen.models import (
    MODELS,
    ImageLimits,
    Origin,
    WanModel,
    lookup,
    resolve,
    tier_of_size,
    trim_prompts,
)
from dropflow.engine.videogen.params import VideoGenParams, build_request
from dropflow.engine.videogen.plan import unit_changed, unit_hash
from dropflow.engine.videogen.usage import paid_usage
from tests.test_videogen_units import make_job

REPO = Path(__file__).resolve().parent.parent
ORIGIN = Origin("shot.yaml", frozenset({"size", "resolution", "duration"}))


def wan(name: str) -> WanModel:
    model = lookup(name)
    assert model is not None, name
    return model


def req(model: str, **kw: Any) -> VideoGenRequest:
    image = kw.pop("image", "/x/a.png" if wan(model).kind == "i2v" else None)
    return VideoGenRequest(model=model, prompt="p", image=image, **kw)


# --- the table: explicit defaults, errors that list what the model takes -------------------------------


def test_defaults_are_the_cheapest_tier_and_explicit() -> None:
    t2v = resolve(req("wan2.2-t2v-plus"), wan("wan2.2-t2v-plus"), ORIGIN)
    assert (t2v.size, t2v.resolution, t2v.duration) == ("832*480", None, None)
    i2v = resolve(req("wan2.2-i2v-plus"), wan("wan2.2-i2v-plus"), ORIGIN)
    assert (i2v.size, i2v.resolution, i2v.duration) == (None, "480P", None)
    # several durations: the default is sent, not left to the service (10 s costs twice as much)
    wan25 = resolve(req("wan2.5-t2v-preview"), wan("wan2.5-t2v-preview"), ORIGIN)
    assert (wan25.size, wan25.duration) == ("832*480", 5)
    only720 = resolve(req("wanx2.1-i2v-plus"), wan("wanx2.1-i2v-plus"), ORIGIN)
    assert only720.resolution == "720P"
    assert lookup("wan2.1-t2v-turbo") is lookup("wanx2.1-t2v-turbo"), "the international spelling too"


@pytest.mark.parametrize(
    ("model", "kw", "error"),
    [
        (
            "wan2.2-i2v-plus",
            {"resolution": "720P"},
            r"shot\.yaml: wan2\.2-i2v-plus does not make resolution 720P",
        ),
        ("wan2.2-t2v-plus", {"size": "1280*720"}, r"does not make size 1280\*720 .*480P: 832\*480"),
        ("wan2.2-t2v-plus", {"duration": 10}, r"does not make 10 s videos .*duration 5 s"),
        ("wan2.2-t2v-plus", {"resolution": "480P"}, r"takes a size, not a resolution"),
        ("wan2.2-i2v-plus", {"size": "832*480"}, r"takes a resolution, not a size .*480P, 1080P"),
        ("wan2.2-t2v-plus", {"image": "/x/a.png"}, r"text-to-video model and takes no image"),
        ("wan2.2-i2v-plus", {"image": None}, r"image-to-video model, but the job has no image"),
        ("wanx2.1-i2v-turbo", {"duration": 6}, r"duration 3, 4, 5 s"),
    ],
)
def test_params_the_model_does_not_take_fail_naming_what_it_does(
    model: str, kw: dict[str, object], error: str
) -> None:
    with pytest.raises(InputError, match=error):
        resolve(req(model, **kw), wan(model), ORIGIN)


def test_an_error_names_the_route_params_when_the_value_came_from_there() -> None:
    request = build_request(VideoSpec(kind="t2v", prompt="a fox"), VideoGenParams(size="1280*720"))
    with pytest.raises(InputError, match=r"from the route's params\.size") as err:
        resolve(request, wan(request.model), Origin("fox.txt"))
    assert "route's params" in err.value.hint


def test_engine_table_agrees_with_the_fakes_rules() -> None:
    """Every choice the engine allows is one the (independently written) fake service takes, the
    engine's defaults are valid, and everything else the fake refuses the engine refuses too."""
    every_size = fake.SD + fake.HD + fake.FHD
    for m in MODELS:
        rules = fake.WAN[m.name]
        assert fake.WAN[m.name] is not None and all(fake.WAN[a] is rules for a in m.aliases)
        assert (rules.kind, rules.default, rules.durations) == (m.kind, m.service_default, m.durations)
        assert (rules.prompt_chars, rules.negative_chars) == (m.prompt_chars, m.negative_chars)
        inp = {"prompt": "p", "img_url": "https://example.com/a.png"}
        choices = every_size if m.kind == "t2v" else ("480P", "720P", "1080P")
        for choice in choices:
            for seconds in (None, 3, 4, 5, 6, 10):
                key = "size" if m.kind == "t2v" else "resolution"
                request = req(m.name, **{key: choice, "duration": seconds})
                try:
                    sent = resolve(request, m, ORIGIN)
                except InputError:
                    engine_ok, params = False, {key: choice, "duration": seconds}
                else:
                    engine_ok = True
                    params = {k: v for k in ("size", "resolution", "duration") if (v := getattr(sent, k))}
                try:
                    fake.check_create(m.name, inp, {k: v for k, v in params.items() if v is not None}, None)
                    fake_ok = True
                except fake.Refused:
                    fake_ok = False
                assert engine_ok == fake_ok, (m.name, choice, seconds)
    assert {n for m in MODELS for n in (m.name, *m.aliases)} == set(fake.WAN)


def test_prompts_are_cut_to_what_the_model_reads() -> None:
    model = wan("wan2.2-t2v-plus")
    long = VideoGenRequest(model=model.name, prompt="x" * 900, negative_prompt="n" * 600)
    cut, found = trim_prompts(long, model)
    assert (len(cut.prompt), len(cut.negative_prompt)) == (800, 500)
    assert [(c.field, c.length, c.limit) for c in found] == [
        ("prompt", 900, 800),
        ("negative_prompt", 600, 500),
    ]
    assert trim_prompts(long, wan("wan2.5-t2v-preview"))[0].prompt == "x" * 900


def test_readmes_job_file_example_is_valid(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Video generation") :]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None
    Image.new("RGB", (640, 480)).save(tmp_path / "shot.png")
    job = tmp_path / "shot.yaml"
    job.write_text(example.group(1), encoding="utf-8")
    spec = read_spec([job])
    request = build_request(spec, VideoGenParams())
    model = lookup(request.model)
    assert model is not None, f"the README's example names a model dropflow does not know: {request.model}"
    resolve(request, model, Origin("shot.yaml", frozenset({"size", "resolution", "duration"})))


# --- first frames ------------------------------------------------------------------------------------


def jpeg(size: tuple[int, int], *, orientation: int | None = None, halves: bool = False) -> bytes:
    im = Image.new("RGB", size, (0, 0, 220))
    if halves:  # left half red: after the EXIF rotation it is on top
        im.paste((220, 0, 0), (0, 0, size[0] // 2, size[1]))
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    im.save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


LIMITS = ImageLimits()


def test_a_sideways_phone_photo_is_turned_upright_and_shrunk(tmp_path: Path) -> None:
    src = tmp_path / "photo.jpg"
    src.write_bytes(jpeg((4032, 3024), orientation=6, halves=True))
    out = prepare_image(src, tmp_path / "job", LIMITS, "wan2.2-i2v-plus")
    assert (out.width, out.height, out.original, out.reencoded) == (1500, 2000, (3024, 4032), True)
    with Image.open(out.path) as im:
        assert im.size == (1500, 2000) and im.format == "JPEG"
        assert im.getexif().get(0x0112, 1) == 1, "no rotation left for the service to (mis)apply"
        top, bottom = im.getpixel((750, 400)), im.getpixel((750, 1600))
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0], "the photo's left edge is now its top"
    assert out.bytes == Path(out.path).stat().st_size <= LIMITS.max_bytes


def test_a_4k_render_is_shrunk_and_a_fitting_image_is_copied_as_it_is(tmp_path: Path) -> None:
    src = tmp_path / "render.png"
    Image.new("RGB", (3840, 2160), (10, 20, 30)).save(src)
    out = prepare_image(src, tmp_path / "a", LIMITS, "wan2.2-i2v-plus")
    assert (out.width, out.height, Path(out.path).suffix) == (2000, 1125, ".jpg")
    fine = tmp_path / "fine.png"
    Image.new("RGB", (800, 600), (1, 2, 3)).save(fine)
    same = prepare_image(fine, tmp_path / "b", LIMITS, "wan2.2-i2v-plus")
    assert not same.reencoded and Path(same.path).read_bytes() == fine.read_bytes()
    assert Path(same.path).name == "fine.png"


def test_transparent_pixels_become_white_not_black(tmp_path: Path) -> None:
    src = tmp_path / "logo.png"
    Image.new("RGBA", (400, 400), (0, 0, 0, 0)).save(src)
    out = prepare_image(src, tmp_path / "j", LIMITS, "m")
    with Image.open(out.path) as im:
        assert out.reencoded and im.mode == "RGB" and min(im.getpixel((10, 10))) > 240


@pytest.mark.parametrize(
    ("size", "error"),
    [
        ((300, 200), r"tiny\.png is 300x200 px; wan2\.2-i2v-plus takes images of 360-2000 px per side"),
        ((6000, 700), r"shrunk to 2000 px its short side would be 233 px"),
    ],
)
def test_an_image_that_cannot_fit_fails_at_once_with_the_reason(
    tmp_path: Path, size: tuple[int, int], error: str
) -> None:
    src = tmp_path / "tiny.png"
    Image.new("RGB", size).save(src)
    with pytest.raises(InputError, match=error):
        prepare_image(src, tmp_path / "j", LIMITS, "wan2.2-i2v-plus")


# --- usage ---------------------------------------------------------------------------------------------


def test_usage_in_the_older_shape() -> None:
    raw = {"video_duration": 5, "video_ratio": "832*480", "video_count": 1}
    usage = paid_usage(raw, VideoGenRequest(model="wan2.2-t2v-plus", prompt="p", size="832*480"))
    assert usage == {
        "model": "wan2.2-t2v-plus",
        "resolution": "480P",
        "size": "832*480",
        "video_seconds": 5,
        "video_count": 1,
        "reported": True,
        "provider_usage": raw,
    }


def test_usage_in_the_wan25_shape_is_never_zero() -> None:
    # what the SDK's VideoSynthesisUsage holds for a wan2.5 reply, once the provider dropped the
    # zero it filled in: duration and SR, no video_duration
    raw = {
        "video_count": 1,
        "duration": 10,
        "SR": 720,
        "ratio": "16:9",
        "output_video_duration": 10,
        "fps": 24,
    }
    usage = paid_usage(raw, VideoGenRequest(model="wan2.5-i2v-preview", prompt="p", resolution="720P"))
    assert (usage["video_seconds"], usage["resolution"], usage["reported"]) == (10, "720P", True)
    # nothing reported at all: what was asked, marked as such
    asked = paid_usage({}, VideoGenRequest(model="wan2.2-i2v-plus", prompt="p", resolution="480P"))
    assert (asked["video_seconds"], asked["resolution"], asked["reported"]) == (5, "480P", False)
    assert tier_of_size("1632*1248") == "1080P" and tier_of_size("960*960") == "720P"


def test_the_fake_reports_each_model_in_its_own_shape() -> None:
    classic = fake.usage(fake.WAN["wan2.2-t2v-plus"], {"size": "832*480"}, None)
    assert classic == {"video_duration": 5, "video_ratio": "832*480", "video_count": 1}
    new = fake.usage(fake.WAN["wan2.5-t2v-preview"], {"size": "832*480", "duration": 10}, None)
    assert new == {"duration": 10, "SR": 480, "ratio": "16:9", "output_video_duration": 10, "fps": 24}
    default = fake.usage(fake.WAN["wan2.2-i2v-plus"], {}, None)
    assert default["video_ratio"] == "1920*1080", "left to itself the service makes (and bills) 1080P"


# --- the unit a job was made from ------------------------------------------------------------------------


def test_a_unit_edited_after_its_job_was_made_is_told_apart(tmp_path: Path) -> None:
    txt = tmp_path / "fox.txt"
    txt.write_text("a fox")
    job = make_job(txt)
    job.content_hash = hashlib.sha256(b"a fox").hexdigest()
    assert unit_hash([txt]) == job.content_hash and not unit_changed(job)
    txt.write_text("a fox, edited")
    assert unit_changed(job)
    job.content_hash = "link:/x:1"  # not a digest: never "changed"
    assert not unit_changed(job)
