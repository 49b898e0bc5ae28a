"""Does cuDNN convolve in TF32 by default here? The relative error of a spiking layer's current
(0/1 input, 64 channels) against the CPU, with PyTorch's default flags and with TF32 turned off."""

import torch
import torch.nn.functional as F

torch.manual_seed(0)
x = (torch.rand(4, 64, 80, 80) > 0.8).float()
w = torch.randn(64, 64, 3, 3) * 0.05
want = F.conv2d(x.double(), w.double(), padding=1)
for allow in (True, False):
    torch.backends.cudnn.allow_tf32 = allow
    got = F.conv2d(x.cuda(), w.cuda(), padding=1).double().cpu()
    print(f"cudnn.allow_tf32={allow}: max relative error {((got - want).abs().max() / want.abs().max()).item():.2e}")
cpu = F.conv2d(x, w, padding=1).double()
print(f"CPU float32: max relative error {((cpu - want).abs().max() / want.abs().max()).item():.2e}")
