"""The image processor of GH encoders: the evaluation transform as a transformers processor.

This file is copied next to every exported encoder (Hub remote code), so it imports only numpy,
PIL and transformers.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_transforms import to_pil_image
from transformers.image_utils import ChannelDimension, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs

# Channels -> PIL mode; "L" uses ITU-R 601-2 luma, as the training and evaluation transforms do.
IMAGE_MODES = {1: "L", 3: "RGB"}


class GHImageProcessorKwargs(ImagesKwargs, total=False):
    """`ImagesKwargs` plus `num_channels`: 1 (grayscale, PIL mode "L") or 3 (RGB)."""

    num_channels: int


class GHImageProcessor(PilBackend):
    r"""Converts images to the encoder's channels, resizes, centre-crops and normalises them.

    The same steps, in the same order and with the same PIL operations, as the evaluation
    transform (`build_eval_transform`): convert to "L" or "RGB", resize the shorter side to
    `size["shortest_edge"]` (bilinear), keep the centre `crop_size` square (offsets rounded like
    torchvision's `CenterCrop`), scale to [0, 1] and normalise with `image_mean` / `image_std`.

    Args:
        num_channels: 1 or 3, the encoder's `in_chans`.
        size: `{"shortest_edge": int}`, the resize target of the shorter side.
        crop_size: `{"height": int, "width": int}`, the encoder's training resolution.
        image_mean, image_std: One value per channel.
        **kwargs: The other `ImagesKwargs` of transformers' image processors.
    """

    valid_kwargs = GHImageProcessorKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    num_channels = 3
    size = {"shortest_edge": 32}
    crop_size = {"height": 32, "width": 32}
    # ImageNet's statistics, as in configuration_gh.IMAGENET_MEAN / IMAGENET_STD; a literal default
    # (a class attribute transformers serialises) keeps this shipped file free of imports.
    image_mean = [0.485, 0.456, 0.406]
    image_std = [0.229, 0.224, 0.225]
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.num_channels not in IMAGE_MODES:
            raise ValueError(
                f"GHImageProcessor.num_channels={self.num_channels!r} is invalid: must be 1 or 3."
            )
        for field in ("image_mean", "image_std"):
            values = getattr(self, field)
            if len(values) != self.num_channels:
                raise ValueError(
                    f"GHImageProcessor.{field}={list(values)} is invalid: needs one value per channel "
                    f"(num_channels={self.num_channels})."
                )

    def process_image(
        self, image, num_channels: int | None = None, input_data_format=None, **kwargs
    ) -> np.ndarray:
        """One image (PIL, NumPy or torch) -> uint8 or float array (num_channels, H, W)."""
        num_channels = num_channels or self.num_channels
        if not isinstance(image, Image.Image):
            array = super().process_image(image, do_convert_rgb=False, input_data_format=input_data_format)
            if array.shape[0] == num_channels:
                return array
            image = to_pil_image(array, input_data_format=ChannelDimension.FIRST)
        mode = IMAGE_MODES[num_channels]
        array = np.asarray(image if image.mode == mode else image.convert(mode))
        return array[None] if array.ndim == 2 else np.ascontiguousarray(np.moveaxis(array, -1, 0))

    def center_crop(self, image: np.ndarray, size: SizeDict, **kwargs) -> np.ndarray:
        """The centre `size` crop of a (C, H, W) array, offsets rounded like torchvision's `CenterCrop`."""
        height, width = image.shape[-2:]
        if size.height > height or size.width > width:
            raise ValueError(
                f"crop_size {size.height}x{size.width} is larger than the resized image {height}x{width}; "
                "size['shortest_edge'] must be >= the crop size."
            )
        top = int(round((height - size.height) / 2.0))
        left = int(round((width - size.width) / 2.0))
        return image[..., top : top + size.height, left : left + size.width]


__all__ = ["GHImageProcessor"]
