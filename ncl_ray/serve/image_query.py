"""An image as the query (`POST /search/image`, `ncl-ray search --image FILE`): read with bounds, embedded by the
model's frame tower as a still clip. No Ray.

The bytes must be a JPEG or PNG of at most MAX_IMAGE_BYTES; its declared size is read from the header and
refused above MAX_IMAGE_PIXELS before any pixel is decoded (a 16000 x 16000 PNG of a few kilobytes would
otherwise expand to 768 MB). The image goes through CLIP's resize and centre crop (data/rgb.clip_resize) to the
model's frame size and is repeated `num_frames` times: a video that does not move, pooled as every clip is, so
it lands in the gallery's space.
"""

import io
import warnings

import numpy as np

from ncl_ray.data.rgb import clip_resize

MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000  # a 7,000 x 5,700 photograph; PIL's own bomb limit is higher
FORMATS = ("JPEG", "PNG")


class ImageError(ValueError):
    """The bytes are not an image this service reads; the message says why."""


def read_image(data: bytes) -> np.ndarray:
    """uint8 (H, W, 3) RGB of a JPEG or PNG, within the bounds above; ImageError otherwise."""
    from PIL import Image

    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"the image is larger than {MAX_IMAGE_BYTES} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS or min(w, h) < 1:
                raise ImageError(f"the image is {w} x {h} pixels; at most {MAX_IMAGE_PIXELS} are read")
            rgb = np.asarray(img.convert("RGB"))  # (H, W, 3), decoded now
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"the image declares more than {MAX_IMAGE_PIXELS} pixels") from None
    except Exception as e:  # PIL raises many kinds for bad bytes: one answer
        raise ImageError(f"not a readable JPEG or PNG ({type(e).__name__})") from None
    return rgb


def still_clip(rgb: np.ndarray, size: int, num_frames: int) -> np.ndarray:
    """uint8 (1, T, S, S, 3): the image at the model's frame size, repeated as a clip of T frames."""
    frame = clip_resize(rgb, size)  # (S, S, 3)
    return np.repeat(frame[None, None], num_frames, axis=1)


def embed_image(model, rgb: np.ndarray, size: int, num_frames: int, device=None) -> np.ndarray:
    """The image's unit embedding (D,) in the gallery's space (the video tower on a still clip)."""
    import torch

    from ncl_ray.data.transforms import normalize_frames

    device = device or torch.device("cpu")
    clip = torch.from_numpy(still_clip(rgb, size, num_frames)).to(device)
    with torch.no_grad():
        return model.encode_video(normalize_frames(clip)).float().cpu().numpy()[0]
