"""The model zoo against the book (d2l 7.6, 8.1–8.8): shapes, parameter counts, a few training steps,
size errors, and the from-scratch BatchNorm against PyTorch's."""

import warnings

import pytest
import torch
import yaml
from helpers import REPO, one_error_line
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from cnnlab.cli import main
from cnnlab.models import create_model, list_models
from cnnlab.models.densenet import DenseBlock, transition_block
from cnnlab.models.googlenet import Inception
from cnnlab.models.layers import AvgPool2d
from cnnlab.models.resnet import Residual, ResNeXtBlock
from cnnlab.ops import BatchNorm

VGG11 = [[1, 64], [1, 128], [2, 256], [2, 512], [2, 512]]
VGG_SMALL = [[1, 16], [1, 32], [2, 64], [2, 128], [2, 128]]
# The options each model's config gives it (configs/model/<name>.yaml).
OPTIONS = {
    name: {
        k: v
        for k, v in yaml.safe_load((REPO / "configs" / "model" / f"{name}.yaml").read_text()).items()
        if k != "name"
    }
    for name in list_models()
}


def build(name: str, size: int, device: str = "cpu", **changes) -> nn.Module:
    """Model `name` for 1-channel size×size inputs and 10 classes, with its config's options."""
    with torch.device(device):
        return create_model(name, 1, 10, (size, size), **{**OPTIONS[name], **changes})


def shapes(layers: list[nn.Module], x: torch.Tensor) -> list[tuple[int, ...]]:
    """The output shape (batch dropped) of each layer applied in turn, like the book's layer_summary."""
    found = []
    for layer in layers:
        x = layer(x)
        found.append(tuple(x.shape[1:]))
    return found


def test_every_model_is_registered_and_fully_built_without_warnings():
    assert set(OPTIONS) <= set(list_models())
    for name in OPTIONS:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model = build(name, 96, device="meta")  # a size every model accepts
        assert not any(isinstance(m, LazyModuleMixin) for m in model.modules()), name


def test_lenet_layer_shapes_match_the_book():
    model = build("lenet", 28).eval()
    layers = [*model.features, *model.classifier]
    assert shapes(layers, torch.zeros(1, 1, 28, 28)) == [
        (6, 28, 28), (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 10, 10), (16, 5, 5),
        (400,), (120,), (120,), (84,), (84,), (10,),
    ]  # fmt: skip


def test_vgg11_block_shapes_match_the_book():
    model = build("vgg", 224, device="meta").eval()
    layers = [*model.features, *model.classifier]
    assert shapes(layers, torch.empty(1, 1, 224, 224, device="meta")) == [
        (64, 112, 112), (128, 56, 56), (256, 28, 28), (512, 14, 14), (512, 7, 7), (25088,),
        (4096,), (4096,), (4096,), (4096,), (4096,), (4096,), (10,),
    ]  # fmt: skip
    assert [type(layer).__name__ for layer in model.classifier] == [
        "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear",
    ]  # fmt: skip
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)


def test_vgg_small_is_the_books_training_arch():
    model = build("vgg", 224, device="meta", arch=VGG_SMALL).eval()
    outputs = shapes(list(model.features)[:5], torch.empty(1, 1, 224, 224, device="meta"))
    assert outputs == [(16, 112, 112), (32, 56, 56), (64, 28, 28), (128, 14, 14), (128, 7, 7)]


def test_resnet18_block_shapes_match_the_book():
    model = build("resnet18", 96, device="meta").eval()
    assert [name for name, _ in model.named_children()] == [
        "stem", "stage1", "stage2", "stage3", "stage4", "head",
    ]  # fmt: skip
    assert shapes(list(model), torch.empty(1, 1, 96, 96, device="meta")) == [
        (64, 24, 24), (64, 24, 24), (128, 12, 12), (256, 6, 6), (512, 3, 3), (10,),
    ]  # fmt: skip
    # The first stage keeps the identity shortcut; later stages open with a 1×1 stride-2 shortcut.
    assert model.stage1[0].shortcut is None
    for stage in (model.stage2, model.stage3, model.stage4):
        shortcut = stage[0].shortcut
        assert (
            isinstance(shortcut, nn.Conv2d) and shortcut.kernel_size == (1, 1) and shortcut.stride == (2, 2)
        )
        assert stage[1].shortcut is None


def test_residual_block_shapes_match_the_book():
    x = torch.randn(4, 3, 6, 6)
    assert Residual(3, 3, stride=1)(x).shape == (4, 3, 6, 6)  # the book's Residual(3)
    # the book's Residual(6, use_1x1conv=True, strides=2): the 1×1 shortcut appears by itself here
    assert Residual(3, 6, stride=2)(x).shape == (4, 6, 3, 3)


def test_resnext_block_shape_matches_the_book_with_groups_as_cardinality():
    # The book's ResNeXtBlock(32, 16, 1) has 32 bottleneck channels in groups of 16 channels, i.e. 2
    # groups: cnnlab's `groups` counts groups, so the same block is groups=32 // 16 = 2.
    block = ResNeXtBlock(32, 32, stride=1, groups=32 // 16, bot_mul=1)
    assert block(torch.randn(4, 32, 96, 96)).shape == (4, 32, 96, 96)
    assert block.conv2.groups == 2 and block.conv2.weight.shape == (32, 16, 3, 3)
    assert block.shortcut is None
    strided = ResNeXtBlock(32, 64, stride=2, groups=32, bot_mul=1)
    assert strided(torch.randn(2, 32, 8, 8)).shape == (2, 64, 4, 4)
    assert [type(m).__name__ for m in strided.shortcut] == ["Conv2d", "BatchNorm2d"]


def test_resnext_groups_must_divide_the_bottleneck():
    with pytest.raises(ValueError, match=r"bottleneck of 16 channels .* groups=32") as error:
        ResNeXtBlock(64, 64, stride=1, groups=32, bot_mul=0.25)
    assert "\n" not in str(error.value)


def lenet_parameters(in_channels: int, num_classes: int) -> int:
    """LeNet-5 by hand: conv 5×5 → 6, conv 5×5 → 16, linear 400 → 120 → 84 → classes (with biases)."""
    return (
        (6 * (in_channels * 25 + 1) + 16 * (6 * 25 + 1))
        + (400 * 120 + 120)
        + (120 * 84 + 84)
        + (84 * num_classes + num_classes)
    )


def vgg_parameters(arch: list[list[int]], in_channels: int, num_classes: int, size: int) -> int:
    """VGG by hand: 3×3 convs with biases, then flatten → 4096 → 4096 → classes."""
    total, channels = 0, in_channels
    for num_convs, out_channels in arch:
        for _ in range(num_convs):
            total += out_channels * (channels * 9 + 1)
            channels = out_channels
    flat = channels * (size // 2 ** len(arch)) ** 2
    return total + (flat * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * num_classes + num_classes)


def test_parameter_counts_match_the_closed_forms():
    lenet = build("lenet", 28)
    assert sum(p.numel() for p in lenet.parameters()) == lenet_parameters(1, 10) == 61_706
    vgg11 = build("vgg", 224, device="meta")
    assert sum(p.numel() for p in vgg11.parameters()) == vgg_parameters(VGG11, 1, 10, 224) == 128_806_154
    with torch.device("meta"):
        rgb = create_model("vgg", 3, 100, (64, 64), init="default", zero_init_head=False, arch=VGG_SMALL)
    assert sum(p.numel() for p in rgb.parameters()) == vgg_parameters(VGG_SMALL, 3, 100, 64)


POOLS = [  # (window, stride, padding, input height × width)
    (2, 2, 0, (28, 28)),  # LeNet's
    (2, None, 0, (11, 9)),  # odd sizes: the last row/column is outside every window
    ((3, 2), (3, 2), 0, (10, 7)),
    (3, 2, 1, (9, 9)),  # overlapping windows with padding: torch's own kernel
]


@pytest.mark.parametrize(("window", "stride", "padding", "size"), POOLS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_avg_pool_matches_torch_in_values_gradients_and_layout(window, stride, padding, size, channels_last):
    torch.manual_seed(0)
    pool = AvgPool2d(window, stride, padding)
    reference = nn.AvgPool2d(window, stride, padding)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(4, 6, *size, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    out = pool(x)
    expected = reference(x)
    torch.testing.assert_close(out, expected)
    grad_out = torch.randn_like(expected).contiguous()  # as a Flatten above hands it back
    (grad,) = torch.autograd.grad(out, x, grad_out)
    (expected_grad,) = torch.autograd.grad(expected, x, grad_out)
    torch.testing.assert_close(grad, expected_grad)
    assert grad.is_contiguous(memory_format=layout)
    assert torch.autograd.gradcheck(pool, (x[:1, :2].detach().requires_grad_(),))


def test_avg_pool_bf16_gradient_matches_torch():
    x = torch.randn(8, 6, 28, 28).contiguous(memory_format=torch.channels_last)
    grads = []
    for pool in (AvgPool2d(2, 2), nn.AvgPool2d(2, 2)):
        leaf = x.to(torch.bfloat16).requires_grad_()
        pool(leaf).float().square().sum().backward()
        grads.append(leaf.grad.float())
    torch.testing.assert_close(*grads, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("scheme", ["xavier", "kaiming", "default"])
def test_init_leaves_batch_norm_at_its_defaults(scheme):
    torch.manual_seed(0)
    model = build("resnext", 16, init=scheme, zero_init_residual=False)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(bool((n.weight == 1).all() and (n.bias == 0).all()) for n in norms)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    zero_biases = all(bool((c.bias == 0).all()) for c in convs)
    assert zero_biases == (scheme != "default")


# Small inputs that each model accepts; VGG with two blocks (the head is still 4096-4096 wide).
TRAINING = [
    ("lenet", 28, {}),
    ("lenet_modern", 28, {}),
    ("vgg", 8, {"arch": [[1, 8], [1, 16]]}),
    ("resnet18", 8, {}),
    ("resnext", 8, {}),
    ("alexnet", 67, {}),
    ("nin", 67, {}),
    ("googlenet", 32, {}),
    ("lenet_bn", 28, {}),
    ("lenet_bn", 28, {"scratch": True}),
    ("densenet", 32, {}),
    ("regnetx32", 16, {}),
]


@pytest.mark.parametrize(
    ("name", "size", "changes"),
    TRAINING,
    ids=[f"{case[0]}{'-scratch' * bool(case[2].get('scratch'))}" for case in TRAINING],
)
def test_every_model_trains_and_its_loss_falls(name, size, changes):
    """Memorizing one random image per class: a few Adam steps must lower the training loss."""
    torch.manual_seed(0)
    model = build(name, size, **changes).train()
    labels = torch.arange(10)
    images = torch.randn(10, 1, size, size)  # one image per class: learnable by memorizing
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # The sigmoid LeNet only reaches the ln(10) plateau in so few steps, and AlexNet's two dropouts of
    # 0.5 slow its memorizing; the others fall well below it (from ln 10 where the head starts at zero).
    assert losses[-1] < {"lenet": 0.95, "alexnet": 0.9}.get(name, 0.85) * losses[0], losses


def test_too_small_resize_is_one_line_naming_the_smallest_size(capsys):
    assert main(["train", "model=vgg11", "resize=16"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("cnnlab train: error: model vgg cannot take 16×16 inputs")
    assert "the smallest size it accepts is 32×32; set resize=32" in line


def test_resnext_with_indivisible_groups_is_a_one_line_error(capsys):
    assert main(["summary", "model=resnext", "model.groups=5"]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("cnnlab summary: error: model resnext")


# --- chapter 8's other models: the shapes the book prints -------------------------------------------


def test_alexnet_layer_shapes_match_the_book():
    model = build("alexnet", 224, device="meta").eval()
    assert shapes([*model.features, *model.classifier], torch.empty(1, 1, 224, 224, device="meta")) == [
        (96, 54, 54), (96, 54, 54), (96, 26, 26), (256, 26, 26), (256, 26, 26), (256, 12, 12),
        (384, 12, 12), (384, 12, 12), (384, 12, 12), (384, 12, 12), (256, 12, 12), (256, 12, 12),
        (256, 5, 5), (6400,), (4096,), (4096,), (4096,), (4096,), (4096,), (4096,), (10,),
    ]  # fmt: skip


def test_nin_layer_shapes_match_the_book():
    model = build("nin", 224, device="meta").eval()
    assert shapes(list(model), torch.empty(1, 1, 224, 224, device="meta")) == [
        (96, 54, 54), (96, 26, 26), (256, 26, 26), (256, 12, 12), (384, 12, 12), (384, 5, 5),
        (384, 5, 5), (10, 5, 5), (10, 1, 1), (10,),
    ]  # fmt: skip
    assert not any(isinstance(m, nn.Linear) for m in model.modules())  # no dense layer at all


def test_googlenet_block_shapes_match_the_book():
    model = build("googlenet", 96, device="meta").eval()
    assert shapes(list(model), torch.empty(1, 1, 96, 96, device="meta")) == [
        (64, 24, 24), (192, 12, 12), (480, 6, 6), (832, 3, 3), (1024,), (10,),
    ]  # fmt: skip
    assert sum(isinstance(m, Inception) for m in model.modules()) == 9
    # The book's first Inception block: 64 + 128 + 32 + 32 = 256 channels at the input's size.
    assert Inception(192, 64, (96, 128), (16, 32), 32)(torch.zeros(2, 192, 12, 12)).shape == (2, 256, 12, 12)


def test_lenet_bn_layer_shapes_and_norms_match_the_book():
    for scratch, norm in ((False, (nn.BatchNorm2d, nn.BatchNorm1d)), (True, (BatchNorm,))):
        model = build("lenet_bn", 28, scratch=scratch).eval()
        layers = [*model.features, *model.classifier]
        assert shapes(layers, torch.zeros(1, 1, 28, 28)) == [
            (6, 28, 28), (6, 28, 28), (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 10, 10), (16, 10, 10),
            (16, 5, 5), (400,), (120,), (120,), (120,), (84,), (84,), (84,), (10,),
        ]  # fmt: skip
        assert (
            sum(isinstance(m, norm) for m in layers) == 4
            and sum(isinstance(m, nn.Sigmoid) for m in layers) == 4
        )


def test_densenet_blocks_and_stages_match_the_book():
    # The book's DenseBlock(2, 10) on 3 channels gives 3 + 2 × 10 = 23; transition_block(10) halves 8×8.
    assert DenseBlock(3, 2, 10)(torch.zeros(4, 3, 8, 8)).shape == (4, 23, 8, 8)
    assert transition_block(23, 10)(torch.zeros(4, 23, 8, 8)).shape == (4, 10, 4, 4)
    model = build("densenet", 96, device="meta").eval()
    assert shapes(list(model), torch.empty(1, 1, 96, 96, device="meta")) == [
        (64, 24, 24), (192, 24, 24), (96, 12, 12), (224, 12, 12), (112, 6, 6), (240, 6, 6),
        (120, 3, 3), (248, 3, 3), (10,),
    ]  # fmt: skip


def test_regnetx32_stage_shapes_match_the_book():
    model = build("regnetx32", 96, device="meta").eval()
    assert shapes(list(model), torch.empty(1, 1, 96, 96, device="meta")) == [
        (32, 48, 48), (32, 24, 24), (80, 12, 12), (10,),
    ]  # fmt: skip
    assert [len(model.stage1), len(model.stage2)] == [4, 6]
    # group width 16: the 32-wide stage's 3×3 convolutions have 2 groups, the 80-wide one's 5
    assert {
        m.groups for m in model.stage1.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    } == {2}
    assert {
        m.groups for m in model.stage2.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    } == {5}


@pytest.mark.parametrize("shape", [(16, 5), (8, 3, 6, 7)])
def test_scratch_batch_norm_matches_torch_in_training_and_eval_with_running_stats(shape):
    torch.manual_seed(0)
    reference = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(shape[1])
    ours = BatchNorm(shape[1], num_dims=len(shape))
    with torch.no_grad():  # the same learned scale and shift, not the defaults
        reference.weight.uniform_(0.5, 1.5), reference.bias.uniform_(-0.5, 0.5)
        (
            ours.gamma.copy_(reference.weight.view_as(ours.gamma)),
            ours.beta.copy_(reference.bias.view_as(ours.beta)),
        )
    for _ in range(3):  # training steps move the running statistics
        x = torch.randn(shape) * 3 + 1
        torch.testing.assert_close(ours(x), reference(x), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours.moving_mean.flatten(), reference.running_mean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours.moving_var.flatten(), reference.running_var, atol=1e-6, rtol=1e-6)
    x = torch.randn(shape)
    torch.testing.assert_close(ours.eval()(x), reference.eval()(x), atol=1e-6, rtol=1e-6)
    x = torch.randn(shape, requires_grad=True)  # and the gradients through it in training
    ours.train(), reference.train()
    (grad_ours,) = torch.autograd.grad(ours(x).square().sum(), x)
    (grad_reference,) = torch.autograd.grad(reference(x).square().sum(), x)
    torch.testing.assert_close(grad_ours, grad_reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=regnetx32", "model.group_width=12"], "is not a multiple of group_width=12"),
        (["model=regnetx32", "model.depths=[4]"], "regnetx32 needs depths and widths of equal length"),
        (["model=densenet", "model.arch=[]", "resize=96"], "densenet needs arch = a non-empty list"),
        (["model=alexnet"], "model alexnet cannot take 28×28 inputs: the smallest size it accepts is 65×65"),
    ],
)
def test_invalid_zoo_options_are_one_line_errors(capsys, overrides, message):
    assert main(["summary", *overrides]) == 2
    assert message in one_error_line(capsys.readouterr().err)
