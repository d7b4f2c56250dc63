"""Small torch models whose layers move data (issue 13, layout ops and resampling),
exported and quantized as tests/models.py does it: onnxruntime QDQ, per-channel int8
weights, seeded weights and calibration data.

* `shufflenet_block`: a ShuffleNet-v2 unit: channel split (Split, or Slice from the
  dynamo exporter), a conv branch, Concat, the channel shuffle (Reshape to
  [N, g, C/g, H, W], Transpose, Reshape back);
* `unet`: a small U-Net: strided conv down, Resize nearest up (x2), skip Concat;
* `unet_bilinear`: the same with bilinear upsampling (x2, torch's align_corners=False:
  the edges repeated and a depthwise conv on the chip);
* `unet_convtranspose`: the same with learned upsampling: ConvTranspose 2x2 stride 2,
  and 3x3 stride 2 with padding and output_padding (onnxruntime 1.32 cannot quantize
  a grouped one per channel: its bias scales have M/group entries);
* `pad_slice`: Pad (constant and reflect), Slice with a step, Concat along the width,
  a Transpose of H and W.
"""

from __future__ import annotations

from models import TorchFamily

INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "shufflenet_block": (1, 3, 8, 8),
    "unet": (1, 3, 16, 16),
    "unet_bilinear": (1, 3, 16, 16),
    "unet_convtranspose": (1, 3, 16, 16),
    "pad_slice": (1, 3, 10, 10),
}
EXPORTS: dict[str, dict[str, int]] = {name: {"legacy": 13, "dynamo": 18}
                                      for name in INPUT_SHAPES}


def _torch_module(name: str):  # -> torch.nn.Module
    import torch
    from torch import nn

    torch.manual_seed(0)

    def shuffle(x, groups: int):
        n, c, h, w = x.shape
        return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    class ShuffleBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.branch = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU(),
                                        nn.Conv2d(8, 8, 3, padding=1, groups=8),
                                        nn.Conv2d(8, 8, 1), nn.ReLU())
            self.head = nn.Sequential(nn.Conv2d(16, 8, 3, stride=2), nn.Flatten(),
                                      nn.Linear(8 * 3 * 3, 10))

        def forward(self, x):
            x = torch.relu(self.stem(x))
            a, b = x.chunk(2, dim=1)
            return self.head(shuffle(torch.cat([a, self.branch(b)], 1), 2))

    class UNet(nn.Module):
        def __init__(self, mode: str = "nearest") -> None:
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
            self.mid = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU())
            self.up = nn.Upsample(scale_factor=2, mode=mode,
                                  **({} if mode == "nearest" else {"align_corners": False}))
            self.dec = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(8, 2, 1))

        def forward(self, x):
            skip = self.enc(x)
            return self.dec(torch.cat([self.up(self.mid(self.down(skip))), skip], 1))

    class UNetConvTranspose(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())
            self.up1 = nn.Sequential(nn.ConvTranspose2d(16, 16, 2, stride=2),
                                     nn.ReLU())
            self.up2 = nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1)
            self.dec = nn.Conv2d(16, 2, 3, padding=1)

        def forward(self, x):
            skip = self.enc(x)
            return self.dec(torch.cat([self.up2(self.up1(self.down(skip))), skip], 1))

    class PadSlice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3)
            self.conv2 = nn.Conv2d(8, 8, 3)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 12 * 4, 10))

        def forward(self, x):
            x = torch.relu(self.conv1(nn.functional.pad(x, (1, 1, 2, 0))))  # 10x10
            x = nn.functional.pad(x, (2, 1, 1, 1), mode="reflect")  # 12x13
            left, right = x[:, :, :, 1:7], x[:, :, 1::2, 5:]  # 12x6, 6x8
            x = torch.cat([left[:, :, :6], right], 3).transpose(2, 3)  # 14x6 (H, W)
            return self.head(torch.relu(self.conv2(x)))

    factories = {"shufflenet_block": ShuffleBlock, "unet": UNet,
                 "unet_bilinear": lambda: UNet("bilinear"),
                 "unet_convtranspose": UNetConvTranspose, "pad_slice": PadSlice}
    return factories[name]().eval()


FAMILY = TorchFamily("move", _torch_module, INPUT_SHAPES, EXPORTS, "out")
float_model, quantized_model = FAMILY.float_model, FAMILY.quantized_model
sample_inputs = FAMILY.sample_inputs
CASES = FAMILY.cases
