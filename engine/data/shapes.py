"""``shapes``: a synthetic shape-vs-texture dataset, generated offline and deterministically.

Each image shows one shape (the class) of random size, position and rotation, filled with a
coloured texture, on a plain-ish background (a random colour with a gentle gradient). Class ``k``
has a *typical* texture ``TEXTURES[k]``, used with probability ``texture_rate`` (default 1.0);
otherwise the foreground gets a random other texture. The texture's "low" tone moves
``texture_contrast`` (default 0.4) towards the background, so it also blurs the outline: texture
is a strong, easily learned cue and shape a partly hidden one. Trained on these images a standard
CNN decides cue-conflict images mostly by texture, while PGD training (ℓ∞ 8/255) pushes it towards
shape (measured in README, "Shipped checkpoints") — the contrast probed by Geirhos et al. 2019
("ImageNet-trained CNNs are biased towards texture") and Agarwal & Chen 2020 (robust models rely
more on shape).

Variants (``make_shapes(variant=...)``):

- ``"normal"``: textured shape on a background; label = shape class.
- ``"silhouette"``: the shape in one flat colour on the same background (shape, no texture).
- ``"texture"``: the texture fills the whole image (no shape); label = the class whose typical
  texture it is (``TEXTURES[label]``); the mask is the whole image.
- ``"cue-conflict"``: the shape of class A filled with the typical texture of a class B != A;
  label = A, ``textures`` = B.

One seed gives the same labels, shapes, positions and colours in every variant. Images are
quantised to multiples of 1/255 (like 8-bit photos), so they store losslessly as uint8.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from engine.data.base import DatasetSpec, TensorImageDataset, check_split
from engine.errors import InvalidParameterError

SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "star", "crescent")
TEXTURES = ("stripes", "dots", "checker", "waves", "noise", "hatch")
VARIANTS = ("normal", "silhouette", "texture", "cue-conflict")
DEFAULT_SIZES = {"train": 20000, "test": 2000}
_SPLIT_SEED_OFFSET = {"train": 0, "test": 1_000_003}
DEFAULT_TEXTURE_CONTRAST = 0.4
DEFAULT_TEXTURE_RATE = 1.0
_CHUNK = 4096  # images rendered at once (bounds memory; the result does not depend on it)

SPEC = DatasetSpec(
    name="shapes",
    num_classes=len(SHAPE_CLASSES),
    class_names=SHAPE_CLASSES,
    input_shape=(3, 32, 32),
    mean=(0.51, 0.51, 0.51),
    std=(0.33, 0.33, 0.33),
    default_arch="small_cnn",
    description=(
        "Synthetic shapes with class-typical textures (offline, generated from a seed); "
        "variants normal, silhouette, texture, cue-conflict"
    ),
)


class ShapesBatch(NamedTuple):
    """Generated images with their ground truth.

    Attributes:
        images: float32 (N, 3, H, W) in [0, 1].
        labels: long (N,), the class (``SHAPE_CLASSES``; for ``"texture"`` the texture's class).
        masks: bool (N, 1, H, W), True on the foreground (the whole image for ``"texture"``).
        textures: long (N,), index into ``TEXTURES`` of the foreground texture, or -1 where the
            image has none (``"silhouette"``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    textures: torch.Tensor


class _Params(NamedTuple):
    """Every random draw for N images (small per-image tensors), so rendering is a pure function."""

    labels: torch.Tensor  # (N,) long
    textures: torch.Tensor  # (N,) long, -1 = none
    centre: torch.Tensor  # (N, 2) pixels (x, y)
    radius: torch.Tensor  # (N,) pixels
    angle: torch.Tensor  # (N,) shape rotation, radians
    tex_period: torch.Tensor  # (N,) pixels
    tex_angle: torch.Tensor  # (N,) radians
    tex_phase: torch.Tensor  # (N, 2) in [0, 1)
    noise: torch.Tensor  # (N, G, G) uniform, for the "noise" texture
    fg_high: torch.Tensor  # (N, 3) foreground colour (texture "on")
    fg_low: torch.Tensor  # (N, 3) foreground colour (texture "off")
    bg: torch.Tensor  # (N, 3) background colour
    bg_slope: torch.Tensor  # (N, 2) background gradient direction * strength


# ----------------------------------------------------------------------------- shapes
# Each takes local coordinates (u, v) of shape (M, H, W), in units of the shape's radius with the
# shape's rotation removed, and returns a bool mask. All fit inside the unit disc (x 1.05).


def _circle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u * u + v * v <= 0.85**2


def _regular_polygon(u: torch.Tensor, v: torch.Tensor, sides: int, apothem: float) -> torch.Tensor:
    inside = torch.ones_like(u, dtype=torch.bool)
    for k in range(sides):
        a = math.pi / 2 + 2 * math.pi * (k + 0.5) / sides
        inside &= u * math.cos(a) + v * math.sin(a) <= apothem
    return inside


def _square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _regular_polygon(u, v, 4, 0.75)


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _regular_polygon(u, v, 3, 0.52)


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    au, av = u.abs(), v.abs()
    return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))


def _star(u: torch.Tensor, v: torch.Tensor, points: int = 5) -> torch.Tensor:
    phi = torch.atan2(v, u) * points / (2 * math.pi)
    tip = ((phi - phi.floor()) - 0.5).abs() * 2  # 1 at a tip, 0 between tips
    return u * u + v * v <= (0.4 + 0.62 * tip) ** 2


def _crescent(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * u + v * v <= 0.95**2) & ((u - 0.45) ** 2 + v * v > 0.72**2)


SHAPE_FUNCS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
    "star": _star,
    "crescent": _crescent,
}


# ----------------------------------------------------------------------------- textures
# Each takes rotated texture coordinates (s, t) in periods (M, H, W), phases (M, 2, 1, 1) in
# [0, 1) and the upsampled noise (M, H, W); returns a pattern in [0, 1] of shape (M, H, W).


def _frac(x: torch.Tensor) -> torch.Tensor:
    return x - x.floor()


def _stripes(s, t, phase, noise):
    return (_frac(s + phase[:, 0]) < 0.5).float()


def _dots(s, t, phase, noise):
    du = _frac(s / 1.4 + phase[:, 0]) - 0.5
    dv = _frac(t / 1.4 + phase[:, 1]) - 0.5
    return (du * du + dv * dv < 0.3**2).float()


def _checker(s, t, phase, noise):
    return ((_frac(s / 1.2 + phase[:, 0]) < 0.5) ^ (_frac(t / 1.2 + phase[:, 1]) < 0.5)).float()


def _waves(s, t, phase, noise):
    wobble = 0.35 * torch.sin(2 * math.pi * (t / 2 + phase[:, 1]))
    return 0.5 + 0.5 * torch.sin(2 * math.pi * (s + wobble + phase[:, 0]))


def _noise(s, t, phase, noise):
    return noise


def _hatch(s, t, phase, noise):
    return ((_frac(s + phase[:, 0]) < 0.25) | (_frac(t + phase[:, 1]) < 0.25)).float()


TEXTURE_FUNCS: dict[str, Callable[..., torch.Tensor]] = {
    "stripes": _stripes,
    "dots": _dots,
    "checker": _checker,
    "waves": _waves,
    "noise": _noise,
    "hatch": _hatch,
}


# ----------------------------------------------------------------------------- generation


def _check_args(n: int, variant: str, image_size: int, texture_rate: float, texture_contrast: float) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidParameterError(f"n must be a non-negative integer, got {n!r}")
    if variant not in VARIANTS:
        raise InvalidParameterError(f"unknown shapes variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 16 <= image_size <= 512:
        raise InvalidParameterError(f"image_size must be an integer in [16, 512], got {image_size!r}")
    if not 0.0 <= float(texture_rate) <= 1.0:
        raise InvalidParameterError(f"texture_rate must be in [0, 1], got {texture_rate!r}")
    if not 0.0 < float(texture_contrast) <= 0.5:
        raise InvalidParameterError(f"texture_contrast must be in (0, 0.5], got {texture_contrast!r}")


def _other_class(labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A uniformly random class different from each label, (N,) long."""
    k = len(SHAPE_CLASSES)
    return (labels + torch.randint(1, k, labels.shape, generator=g)) % k


def _draw_textures(labels: torch.Tensor, variant: str, texture_rate: float, g: torch.Generator):
    """Texture index per image for ``variant`` (-1 for silhouettes).

    Draws the same random numbers for every variant, so one seed gives the same labels, geometry
    and colours in all variants (a silhouette is the textured image with its texture removed).
    """
    other = _other_class(labels, g)
    typical = torch.rand(labels.shape, generator=g) < texture_rate
    if variant == "silhouette":
        return torch.full_like(labels, -1)
    if variant == "cue-conflict":
        return other
    if variant == "texture":
        return labels.clone()
    return torch.where(typical, labels, other)


def _uniform(shape, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g)


def _draw_colours(n: int, texture_contrast: float, g: torch.Generator):
    """Foreground (high, low) and background colours with a guaranteed light/dark contrast.

    The texture's two tones differ by ``texture_contrast`` x U(0.8, 1.2) in every channel (the
    "low" tone moves towards the background; it may reach or pass it, hiding that part of the
    outline). Values are clamped to [0, 1] when rendering.
    """
    light_bg = torch.rand(n, 1, generator=g) < 0.5  # (N, 1)
    dark, light = _uniform((n, 3), 0.0, 0.35, g), _uniform((n, 3), 0.7, 1.0, g)
    bg = torch.where(light_bg, light, dark)
    fg_high = torch.where(light_bg, dark, light)
    step = texture_contrast * _uniform((n, 1), 0.8, 1.2, g)
    fg_low = fg_high + step * torch.sign(bg - fg_high)
    return fg_high, fg_low, bg


def _draw_params(n: int, variant: str, image_size: int, texture_rate: float, texture_contrast: float,
                 seed: int) -> _Params:
    g = torch.Generator().manual_seed(int(seed))
    k = len(SHAPE_CLASSES)
    labels = torch.randint(0, k, (n,), generator=g)
    textures = _draw_textures(labels, variant, texture_rate, g)
    radius = _uniform((n,), 0.24, 0.4, g) * image_size
    margin = 1.05 * radius
    centre = margin[:, None] + torch.rand(n, 2, generator=g) * (image_size - 2 * margin)[:, None]
    angle = _uniform((n,), 0.0, 2 * math.pi, g)
    tex_period = _uniform((n,), 3.5, 6.0, g) * image_size / 32
    tex_angle = _uniform((n,), 0.0, math.pi, g)
    tex_phase = torch.rand(n, 2, generator=g)
    grid = image_size // 2
    noise = torch.rand(n, grid, grid, generator=g)
    fg_high, fg_low, bg = _draw_colours(n, texture_contrast, g)
    bg_angle = _uniform((n,), 0.0, 2 * math.pi, g)
    bg_strength = _uniform((n,), 0.0, 0.15, g)
    bg_slope = torch.stack([bg_angle.cos(), bg_angle.sin()], 1) * bg_strength[:, None]
    return _Params(labels, textures, centre, radius, angle, tex_period, tex_angle, tex_phase,
                   noise, fg_high, fg_low, bg, bg_slope)


def _rotate(x: torch.Tensor, y: torch.Tensor, angle: torch.Tensor):
    """Rotate pixel offsets (M, H, W) by -angle (M,): into an object's own frame."""
    c, s = angle.cos()[:, None, None], angle.sin()[:, None, None]
    return x * c + y * s, -x * s + y * c


def _masks(p: _Params, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Foreground masks (M, H, W) bool of each image's shape class."""
    dx = (xs - p.centre[:, 0, None, None]) / p.radius[:, None, None]
    dy = (ys - p.centre[:, 1, None, None]) / p.radius[:, None, None]
    u, v = _rotate(dx, dy, p.angle)
    masks = torch.zeros_like(u, dtype=torch.bool)
    for k, fn in enumerate(SHAPE_FUNCS.values()):
        idx = (p.labels == k).nonzero().flatten()
        masks[idx] = fn(u[idx], v[idx])
    return masks


def _patterns(p: _Params, xs: torch.Tensor, ys: torch.Tensor, size: int) -> torch.Tensor:
    """Texture patterns (M, H, W) in [0, 1]; zeros where an image has no texture."""
    s, t = _rotate(xs / p.tex_period[:, None, None], ys / p.tex_period[:, None, None], p.tex_angle)
    noise = F.interpolate(p.noise[:, None], size=(size, size), mode="nearest")[:, 0]
    phase = p.tex_phase[:, :, None, None]
    out = torch.zeros_like(s)
    for k, fn in enumerate(TEXTURE_FUNCS.values()):
        idx = (p.textures == k).nonzero().flatten()
        out[idx] = fn(s[idx], t[idx], phase[idx], noise[idx])
    return out


def _ramp(slope: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, size: int) -> torch.Tensor:
    """A linear background gradient (M, H, W), zero at the centre, +-slope at the edges."""
    return ((2 * xs - size) * slope[:, 0, None, None] + (2 * ys - size) * slope[:, 1, None, None]) / size


def _render(p: _Params, variant: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (M, 3, H, W) in [0, 1] (8-bit quantised) and masks (M, 1, H, W) for params ``p``."""
    m = len(p.labels)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    xs, ys = coords.view(1, 1, size), coords.view(1, size, 1)  # broadcast to (M, H, W) lazily
    if variant == "texture":
        masks = torch.ones(m, size, size, dtype=torch.bool)
    else:
        masks = _masks(p, xs, ys)
    if variant == "silhouette":
        fg = p.fg_high[:, :, None, None].expand(m, 3, size, size)
    else:
        pattern = _patterns(p, xs, ys, size)[:, None]  # (M, 1, H, W)
        fg = p.fg_low[:, :, None, None] + pattern * (p.fg_high - p.fg_low)[:, :, None, None]
    bg = p.bg[:, :, None, None] + _ramp(p.bg_slope, xs, ys, size)[:, None]
    images = torch.where(masks[:, None], fg, bg).clamp(0.0, 1.0)
    return images.mul(255).round_().div_(255), masks[:, None]


def _select(p: _Params, lo: int, hi: int) -> _Params:
    return _Params(*(field[lo:hi] for field in p))


def make_shapes(n: int, seed: int = 0, variant: str = "normal", image_size: int = 32,
                texture_rate: float = DEFAULT_TEXTURE_RATE,
                texture_contrast: float = DEFAULT_TEXTURE_CONTRAST) -> ShapesBatch:
    """Generate ``n`` shape images, identically for the same arguments (CPU, vectorised).

    Args:
        n: number of images (>= 0).
        seed: any integer; the same seed gives bit-identical tensors.
        variant: ``"normal"``, ``"silhouette"``, ``"texture"`` or ``"cue-conflict"``.
        image_size: side H = W in pixels, 16..512.
        texture_rate: probability in [0, 1] that a ``"normal"`` image's foreground uses its class's
            typical texture (otherwise a uniformly random other texture). Ignored by the other
            variants.
        texture_contrast: step in (0, 0.5] from the texture's "high" tone towards the
            background colour for its "low" tone (x U(0.8, 1.2) per image). Larger values make
            the texture more visible and the outline fainter where the low tone meets the
            background.

    Returns:
        :class:`ShapesBatch` with images (N, 3, H, W) float32 in [0, 1], labels (N,), masks
        (N, 1, H, W) bool and textures (N,) (see the class docstring).
    """
    _check_args(n, variant, image_size, texture_rate, texture_contrast)
    params = _draw_params(n, variant, image_size, float(texture_rate), float(texture_contrast), seed)
    parts = [_render(_select(params, lo, lo + _CHUNK), variant, image_size) for lo in range(0, n, _CHUNK)]
    if parts:
        images, masks = (torch.cat(x) for x in zip(*parts))
    else:
        images = torch.zeros(0, 3, image_size, image_size)
        masks = torch.zeros(0, 1, image_size, image_size, dtype=torch.bool)
    return ShapesBatch(images, params.labels, masks, params.textures)


class ShapesDataset(TensorImageDataset):
    """A generated ``shapes`` split; besides images and labels it keeps ``masks`` and ``textures``.

    It offers the foreground-mask interface of the localisation metrics
    (``engine.attribution.metrics.dataset_masks``): :meth:`foreground_masks`.
    """

    def __init__(self, batch: ShapesBatch, spec: DatasetSpec, variant: str):
        super().__init__(batch.images.mul(255).round().to(torch.uint8), batch.labels, spec)
        self.masks = batch.masks
        self.textures = batch.textures
        self.variant = variant

    def foreground_masks(self, indices=None) -> torch.Tensor:
        """The foreground masks (n, 1, H, W) bool of images ``indices`` (a sequence or tensor of
        indices; None: every image), in that order: True on the shape (everywhere for the
        ``"texture"`` variant)."""
        if indices is None:
            return self.masks.clone()
        return self.masks[torch.as_tensor(indices, dtype=torch.long)]


def load_shapes(split: str = "test", n: int | None = None, variant: str = "normal",
                texture_rate: float = DEFAULT_TEXTURE_RATE, seed: int = 0, image_size: int = 32,
                texture_contrast: float = DEFAULT_TEXTURE_CONTRAST) -> ShapesDataset:
    """Generate a ``shapes`` split (train and test come from different seeds).

    Args:
        split: ``"train"`` (default 20,000 images) or ``"test"`` (default 2,000 images).
        n, variant, texture_rate, image_size, texture_contrast: see :func:`make_shapes`.
        seed: base seed; the split adds its own offset so train and test never coincide.

    Returns:
        :class:`ShapesDataset` yielding ``(image (3, H, W), label)``.
    """
    check_split(split)
    n = DEFAULT_SIZES[split] if n is None else n
    batch = make_shapes(n, seed=int(seed) + _SPLIT_SEED_OFFSET[split], variant=variant,
                        image_size=image_size, texture_rate=texture_rate, texture_contrast=texture_contrast)
    spec = SPEC if image_size == 32 else _sized_spec(image_size)
    return ShapesDataset(batch, spec, variant)


def _sized_spec(image_size: int) -> DatasetSpec:
    return replace(SPEC, input_shape=(3, image_size, image_size))
