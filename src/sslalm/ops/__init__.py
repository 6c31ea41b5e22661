"""Numerical kernels. Every fast path here has a slow, obviously-correct twin and a parity test."""

from sslalm.ops.scan import (
    selective_scan,
    selective_scan_chunked,
    selective_scan_loop,
    selective_scan_ref,
    selective_state_update,
)
from sslalm.ops.scan_recurrent import selective_scan_recurrent

__all__ = [
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_loop",
    "selective_scan_recurrent",
    "selective_scan_ref",
    "selective_state_update",
]
