"""Model factories used by tests through the ``package.module:factory`` source form."""

import torch
from torch import nn


def fixed_ten_classes(num_classes: int = 10) -> nn.Module:
    """Always 10 outputs whatever ``num_classes`` says (to test the class-count check)."""
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(10))


def zero_head(num_classes: int = 10) -> nn.Module:
    """A CNN whose classifier is zero-initialised, like torchvision's ViT: every logit is 0."""
    from edgeship.zoo import digits_cnn

    model = digits_cnn(num_classes)
    nn.init.zeros_(model[-1].weight)
    nn.init.zeros_(model[-1].bias)
    return model


def tiny_vit(num_classes: int = 10) -> nn.Module:
    """A torchvision VisionTransformer small enough for tests (32x32, 2 layers, 4 heads of 16)."""
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                             num_classes=num_classes)


def standalone_bn_cnn(num_classes: int = 10) -> nn.Module:
    """The digits CNN with a BatchNorm after its first ReLU (no conv to fold into), like archified ConvNeXt's."""
    from edgeship.zoo import digits_cnn

    model = digits_cnn(num_classes)
    model.insert(3, nn.BatchNorm2d(model[0].out_channels))
    return model


def randomize_batch_norms(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and scales (fresh ones are the identity), in place."""
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.normal_()
    return model


class _Bucketize(nn.Module):
    """Snaps activations to three levels with ``torch.bucketize``: ONNX and OpenVINO convert it, litert-torch has
    no lowering for it (a converter failure on one format only)."""

    def forward(self, x):
        import torch

        return torch.bucketize(x, torch.tensor([0.0, 0.5])).float()


def bucketize_cnn(num_classes: int = 10) -> nn.Module:
    """The digits CNN with a ``_Bucketize`` block after its first conv (module path ``odd.1``)."""
    from edgeship.zoo import digits_cnn

    cnn = digits_cnn(num_classes)
    return nn.Sequential(cnn[0], nn.Sequential(cnn[1], _Bucketize()), *list(cnn)[2:])


class _Branchy(nn.Module):
    """Doubles its input when the batch mean is positive: control flow that depends on the data."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:  # the line a converter failure must name
            return x * 2
        return x


def branchy_cnn(num_classes: int = 10) -> nn.Module:
    """The digits CNN with a data-dependent ``if`` after its first conv: torch.export, so every format, fails."""
    from edgeship.zoo import digits_cnn

    cnn = digits_cnn(num_classes)
    return nn.Sequential(cnn[0], _Branchy(), *list(cnn)[1:])
