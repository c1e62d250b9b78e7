"""Out-of-distribution image distortions with five severities (Agarwal & Chen 2020, docs/SCIENCE.md, "Generalisation and simplicity").

Every distortion maps a batch of images ``(B, C, H, W)`` in [0, 1] to a batch of the same shape,
dtype and range. Random ones (noise, patch shuffle) draw from a ``torch.Generator`` seeded by the
caller, so ``apply(name, images, severity, seed)`` is deterministic.

Each :class:`Distortion` says which cue it mainly leaves in the image (``keeps``):

* ``"shape"``   — texture removed, global shape kept: ``edges``, ``silhouette``, ``low_pass``.
* ``"texture"`` — local texture kept, global shape destroyed: ``patch_shuffle``, ``high_pass``.
* ``"both"``    — common corruptions that degrade both: ``gaussian_blur``, ``gaussian_noise``,
  ``contrast``.

Agarwal & Chen report that adversarially trained models gain on the ``"shape"`` group (they rely
on shape) and are on par or worse on the others. On the offline ``shapes`` dataset the exact
silhouette, texture-only and cue-conflict images come from ``engine.data.shapes.make_shapes``.

Parameters scale with the image size where that matters (blur widths are given for 32 px and
scaled by ``H / 32``), so severities mean roughly the same at 28, 32 and 224 px.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from engine.errors import InvalidParameterError

#: The severities every distortion accepts (1 = mild, 5 = strongest).
SEVERITIES = (1, 2, 3, 4, 5)

#: Values a distortion's ``keeps`` field can take.
CUES = ("shape", "texture", "both")

# (images (B,C,H,W), level, generator) -> images (B,C,H,W)
DistortionFn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Distortion:
    """One registered distortion.

    Attributes:
        name: registry key.
        description: one line for people, naming the parameter the severity sets.
        levels: the parameter value for severities 1..5 (``levels[severity - 1]``).
        keeps: which cue survives: ``"shape"``, ``"texture"`` or ``"both"`` (see module doc).
        random: whether the output depends on the seed.
        fn: ``fn(images, level, generator) -> images``; use :func:`apply` rather than calling it.
    """

    name: str
    description: str
    levels: tuple[float, ...]
    keeps: str
    random: bool
    fn: DistortionFn

    def level(self, severity: int) -> float:
        """The parameter value used at ``severity`` (1..5)."""
        return self.levels[check_severity(severity) - 1]


# ---------------------------------------------------------------------------------------------
# building blocks


def _scale(images: torch.Tensor) -> float:
    """Size factor relative to a 32-pixel image (min of H, W)."""
    return min(images.shape[-2:]) / 32.0


def _gaussian_kernel(sigma: float, radius: int, device, dtype) -> torch.Tensor:
    """Normalised 1-D Gaussian of length ``2 * radius + 1``."""
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding; ``sigma`` in pixels."""
    b, c, h, w = images.shape
    radius = max(1, min(int(math.ceil(3 * sigma)), h - 1, w - 1))
    kernel = _gaussian_kernel(sigma, radius, images.device, images.dtype)
    flat = images.reshape(b * c, 1, h, w)  # (B*C, 1, H, W)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return flat.reshape(b, c, h, w)


def _radial_frequency(h: int, w: int, device) -> torch.Tensor:
    """(H, W) radial frequency in cycles/pixel of each ``fft2`` coefficient (0 .. ~0.71)."""
    fy = torch.fft.fftfreq(h, device=device).view(-1, 1)
    fx = torch.fft.fftfreq(w, device=device).view(1, -1)
    return torch.sqrt(fy**2 + fx**2)


def _fourier_filter(images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero every ``fft2`` coefficient where ``keep`` (H, W, bool) is False."""
    spectrum = torch.fft.fft2(images.to(torch.float64))  # (B, C, H, W) complex
    return torch.fft.ifft2(spectrum * keep).real.to(images.dtype)


def _grey(images: torch.Tensor) -> torch.Tensor:
    """Channel mean, (B, 1, H, W)."""
    return images.mean(dim=1, keepdim=True)


def _as_channels(mask: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat a (B, 1, H, W) map over ``channels``."""
    return mask.expand(-1, channels, -1, -1).contiguous()


# ---------------------------------------------------------------------------------------------
# the distortions: (images, level, generator) -> images; results are clamped by `apply`


def gaussian_blur(images: torch.Tensor, sigma: float, _gen: torch.Generator) -> torch.Tensor:
    """Gaussian blur; ``sigma`` in pixels of a 32-px image."""
    return _blur(images, sigma * _scale(images))


def gaussian_noise(images: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """Additive i.i.d. Gaussian noise of standard deviation ``std`` (then clipped)."""
    noise = torch.randn(images.shape, generator=gen, dtype=torch.float32).to(images.device)
    return images + std * noise.to(images.dtype)


def low_pass(images: torch.Tensor, cutoff: float, _gen: torch.Generator) -> torch.Tensor:
    """Ideal low-pass: keep Fourier frequencies with radius <= ``cutoff`` cycles/pixel."""
    radius = _radial_frequency(*images.shape[-2:], images.device)
    return _fourier_filter(images, radius <= cutoff)


def high_pass(images: torch.Tensor, cutoff: float, _gen: torch.Generator) -> torch.Tensor:
    """Ideal high-pass: drop frequencies with 0 < radius < ``cutoff``; the mean (DC) is kept."""
    radius = _radial_frequency(*images.shape[-2:], images.device)
    return _fourier_filter(images, (radius >= cutoff) | (radius == 0))


def edges(images: torch.Tensor, threshold: float, _gen: torch.Generator) -> torch.Tensor:
    """Binary edge map: Sobel magnitude of the lightly blurred grey image > ``threshold`` x max.

    White edges on black, repeated over the input's channels. The pre-blur (sigma = 1 px at 32 px)
    suppresses fine texture so mostly object outlines survive.
    """
    grey = _blur(_grey(images), _scale(images))  # (B, 1, H, W)
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=images.device)
    kernels = torch.stack([sobel_x, sobel_x.t()]).unsqueeze(1).to(images.dtype)  # (2, 1, 3, 3)
    grad = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)  # (B, 2, H, W)
    magnitude = grad.pow(2).sum(dim=1, keepdim=True).sqrt()
    peak = magnitude.amax(dim=(2, 3), keepdim=True).clamp_min(1e-8)
    return _as_channels((magnitude > threshold * peak).to(images.dtype), images.shape[1])


def silhouette(images: torch.Tensor, threshold: float, _gen: torch.Generator) -> torch.Tensor:
    """Binary foreground mask: grey pixels differing from the background by > ``threshold``.

    The background level is the median of the image border. Foreground is white on black (the
    MNIST polarity), repeated over the input's channels; all texture and colour is removed.
    """
    grey = _grey(images)  # (B, 1, H, W)
    border = torch.cat(
        [grey[..., 0, :], grey[..., -1, :], grey[..., :, 0], grey[..., :, -1]], dim=-1
    )  # (B, 1, 2H + 2W)
    background = border.median(dim=-1).values.view(-1, 1, 1, 1)
    mask = ((grey - background).abs() > threshold).to(images.dtype)
    return _as_channels(mask, images.shape[1])


def patch_shuffle(images: torch.Tensor, grid: float, gen: torch.Generator) -> torch.Tensor:
    """Cut the image into a ``grid`` x ``grid`` array of patches and permute them (per image).

    Keeps every pixel value (the histogram is exactly preserved) and the local texture inside each
    patch; destroys the global shape. When H or W is not a multiple of ``grid`` the leftover
    bottom/right strip stays in place. The permutation is never the identity.
    """
    b, c, h, w = images.shape
    g = int(min(grid, h, w))
    ph, pw = h // g, w // g
    out = images.clone()
    region = images[:, :, : g * ph, : g * pw]
    patches = region.reshape(b, c, g, ph, g, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c, ph, pw)
    orders = torch.rand((b, g * g), generator=gen).argsort(dim=1)  # (B, g*g)
    identity = (orders == torch.arange(g * g)).all(dim=1)
    orders[identity] = orders[identity].roll(1, dims=1)
    rows = torch.arange(b).view(-1, 1)
    shuffled = patches[rows.to(images.device), orders.to(images.device)]  # (B, g*g, C, ph, pw)
    shuffled = shuffled.reshape(b, g, g, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    out[:, :, : g * ph, : g * pw] = shuffled.reshape(b, c, g * ph, g * pw)
    return out


def contrast(images: torch.Tensor, factor: float, _gen: torch.Generator) -> torch.Tensor:
    """Shrink contrast towards each image's mean: ``mean + factor * (x - mean)``."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return mean + factor * (images - mean)


def _spec(name, fn, levels, keeps, random, description) -> Distortion:
    return Distortion(name, description, tuple(float(v) for v in levels), keeps, random, fn)


#: name -> :class:`Distortion`. Fills the select boxes and parametrises the tests.
DISTORTIONS: dict[str, Distortion] = {
    d.name: d
    for d in (
        _spec("gaussian_blur", gaussian_blur, (0.5, 1.0, 1.5, 2.0, 3.0), "both", False,
              "Gaussian blur; severity sets sigma (pixels at 32 px, scaled with size)"),
        _spec("gaussian_noise", gaussian_noise, (0.04, 0.08, 0.12, 0.18, 0.26), "both", True,
              "additive Gaussian noise; severity sets the standard deviation"),
        _spec("contrast", contrast, (0.6, 0.45, 0.3, 0.2, 0.1), "both", False,
              "contrast reduction; severity sets the remaining contrast factor"),
        _spec("low_pass", low_pass, (0.3, 0.2, 0.14, 0.1, 0.06), "shape", False,
              "ideal Fourier low-pass; severity sets the cutoff (cycles/pixel, lower = stronger)"),
        _spec("high_pass", high_pass, (0.02, 0.05, 0.08, 0.12, 0.18), "texture", False,
              "ideal Fourier high-pass (mean kept); severity sets the cutoff (cycles/pixel)"),
        _spec("edges", edges, (0.1, 0.2, 0.3, 0.4, 0.5), "shape", False,
              "binary Sobel edge map; severity sets the threshold (fraction of the max gradient)"),
        _spec("silhouette", silhouette, (0.05, 0.1, 0.15, 0.2, 0.3), "shape", False,
              "binary foreground silhouette; severity sets the grey-level threshold"),
        _spec("patch_shuffle", patch_shuffle, (2, 3, 4, 6, 8), "texture", True,
              "patch shuffle; severity sets the grid (k x k patches permuted)"),
    )
}


def check_severity(severity) -> int:
    """Return ``severity`` if it is an integer in 1..5, else raise ``InvalidParameterError``."""
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise InvalidParameterError(
            f"severity must be an integer from {SEVERITIES[0]} to {SEVERITIES[-1]}, got {severity!r}"
        )
    return severity


def get_distortion(name: str) -> Distortion:
    """Look up a distortion by name.

    Raises:
        InvalidParameterError: unknown name (the message lists the registered ones).
    """
    if name not in DISTORTIONS:
        raise InvalidParameterError(
            f"unknown distortion {name!r}; choose one of {', '.join(DISTORTIONS)}"
        )
    return DISTORTIONS[name]


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InvalidParameterError(f"images must be a float tensor (B, C, H, W), got {shape}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise InvalidParameterError("images must lie in [0, 1] (models normalise internally)")


def apply(name: str, images: torch.Tensor, severity: int, seed: int = 0) -> torch.Tensor:
    """Distort a batch of images.

    Args:
        name: a key of :data:`DISTORTIONS`.
        images: (B, C, H, W) float tensor in [0, 1], any device; not modified.
        severity: 1 (mild) .. 5 (strongest).
        seed: seeds the random draws (noise, patch permutations); the same seed gives the same
            output.

    Returns:
        (B, C, H, W) tensor, same dtype and device, clipped to [0, 1].

    Raises:
        InvalidParameterError: unknown name, severity outside 1..5, or images of the wrong kind.
    """
    spec = get_distortion(name)
    level = spec.level(severity)
    _check_images(images)
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        out = spec.fn(images.detach(), level, generator)
    return out.clamp(0.0, 1.0).to(images.dtype)
