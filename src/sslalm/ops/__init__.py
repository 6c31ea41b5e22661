"""Numerical kernels. Every fast path here has a slow, obviously-correct twin and a parity test.

``selective_scan`` / ``selective_state_update`` / ``causal_conv1d`` / ``causal_conv1d_update`` pick a kernel
per call (``method="auto"``, rule in ``sslalm.ops.dispatch``); each method also has its own module.
"""

from sslalm.ops.conv1d import causal_conv1d, causal_conv1d_update
from sslalm.ops.scan import selective_scan
from sslalm.ops.scan_chunked import selective_scan_chunked
from sslalm.ops.scan_loop import selective_scan_loop
from sslalm.ops.scan_recurrent import selective_scan_recurrent
from sslalm.ops.scan_ref import selective_scan_ref
from sslalm.ops.state_update import selective_state_update

__all__ = [
    "causal_conv1d",
    "causal_conv1d_update",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_loop",
    "selective_scan_recurrent",
    "selective_scan_ref",
    "selective_state_update",
]
