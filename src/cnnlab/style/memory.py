"""How large an image this machine can stylize by optimization: the loss network's activations (and their
gradients, and L-BFGS's history) grow with the pixels, and a size that does not fit would fail after minutes
of work, or swap; checked before anything starts, with the maximum named."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError

# Memory a stylization needs per output pixel (forward + backward of the loss network up to its deepest layer,
# fp32, with L-BFGS's history), measured as peak RSS over sizes (benchmarks/style.py prints it); rounded up.
BYTES_PER_PIXEL = {"vgg19": 6000, "vgg16": 5000, "efficientnet_lite0": 2500}


def available_memory(device: torch.device) -> int:
    """Bytes free for this process: the GPU's free memory, or the machine's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30  # unknown: assume a laptop's 8 GB


def max_size(net_name: str, device: torch.device) -> int:
    """The largest square side this machine can stylize with that loss network."""
    per_pixel = BYTES_PER_PIXEL.get(net_name, 6000)
    return int((available_memory(device) * 0.8 / per_pixel) ** 0.5)


def check_size(size: int, net_name: str, device: torch.device) -> None:
    """Refuse sizes whose activations cannot fit in memory, naming the maximum."""
    limit = max_size(net_name, device)
    if size > limit:
        raise UserError(f"--size {size} is too large for this machine's memory with loss network {net_name}: the "
                        f"maximum here is about {limit} px on the longest side")
