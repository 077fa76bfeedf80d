"""Lossless 8/16-bit single-channel image encoding for MR slices (PNG bytes in LMDB or on disk).

BasicSR's ``imfrombytes`` decodes as 8-bit colour, which rounds 16-bit MR to 256 grey levels; these helpers keep
the stored bit depth end to end.
"""
import cv2
import numpy as np

BIT_DEPTHS = {8: np.uint8, 16: np.uint16}


def quantize(img, bit_depth):
    """Float image in [0, 1] -> uint8 or uint16 with round-to-nearest; same shape."""
    if bit_depth not in BIT_DEPTHS:
        raise ValueError(f'bit_depth must be 8 or 16, got {bit_depth}')
    peak = 2**bit_depth - 1
    return np.round(np.clip(img, 0, 1) * peak).astype(BIT_DEPTHS[bit_depth])


def encode_png(img, compress_level=1):
    """uint8/uint16 (H, W) -> PNG bytes."""
    ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:
        raise ValueError(f'cannot encode an image of shape {img.shape} and dtype {img.dtype} as PNG')
    return buf.tobytes()


def decode_to_float(content, source='image'):
    """PNG/TIFF bytes (8- or 16-bit, grey or colour) -> float32 (H, W, C) in [0, 1], divided by its dtype's peak.

    ``source`` names the file or LMDB key in error messages.
    """
    img = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f'{source}: not a decodable image')
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f'{source}: unsupported pixel type {img.dtype}; expected 8- or 16-bit')
    peak = np.iinfo(img.dtype).max
    img = img.astype(np.float32) / peak
    return img[..., None] if img.ndim == 2 else img
