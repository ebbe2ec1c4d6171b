"""cnnlab.ops: the book's printed values (d2l 7.2–7.5) and agreement with torch.nn.functional."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.ops import (
    Conv2D,
    conv_output_shape,
    corr2d,
    corr2d_matmul,
    corr2d_multi_in,
    corr2d_multi_in_out,
    corr2d_multi_in_out_1x1,
    kernel_matrix,
    mirror_pad,
    patch_matrix,
    pool2d,
    windows,
)

X3 = torch.arange(9.0).reshape(3, 3)  # the book's [[0,1,2],[3,4,5],[6,7,8]]
K2 = torch.arange(4.0).reshape(2, 2)  # the book's [[0,1],[2,3]]


def stripes() -> torch.Tensor:
    X = torch.ones(6, 8)
    X[:, 2:6] = 0
    return X


def random_shapes(count: int, seed: int):
    """(h, w, k_h, k_w) with the kernel fitting the input, reproducibly."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        h, w = torch.randint(1, 12, (2,), generator=generator).tolist()
        k_h = torch.randint(1, h + 1, (1,), generator=generator).item()
        k_w = torch.randint(1, w + 1, (1,), generator=generator).item()
        yield h, w, k_h, k_w


# --- 7.2 cross-correlation ---------------------------------------------------------------------------


def test_corr2d_book_value():
    assert torch.equal(corr2d(X3, K2), torch.tensor([[19.0, 25.0], [37.0, 43.0]]))


def test_edge_detection_book_values():
    Y = corr2d(stripes(), torch.tensor([[1.0, -1.0]]))
    assert Y.shape == (6, 7)
    assert torch.equal(Y, torch.tensor([[0.0, 1, 0, 0, 0, -1, 0]]).expand(6, 7))
    transposed = corr2d(stripes().T, torch.tensor([[1.0, -1.0]]))
    assert transposed.shape == (8, 5)
    assert torch.equal(transposed, torch.zeros(8, 5))


def test_corr2d_matches_conv2d_on_random_shapes():
    generator = torch.Generator().manual_seed(0)
    for h, w, k_h, k_w in random_shapes(60, seed=1):
        X = torch.randn(h, w, generator=generator)
        K = torch.randn(k_h, k_w, generator=generator)
        expected = F.conv2d(X[None, None], K[None, None])[0, 0]
        torch.testing.assert_close(corr2d(X, K), expected)
        torch.testing.assert_close(corr2d_matmul(X, K), expected)
        torch.testing.assert_close(patch_matrix(X, (k_h, k_w)) @ K.reshape(-1), expected.reshape(-1))


def test_kernel_matrix_is_the_books_exercise_matrix():
    # The notebook's exercise: a 2×2 kernel of ones on a 3×3 input gives this 4×9 matrix.
    W = kernel_matrix(torch.ones(2, 2), (3, 3))
    assert torch.equal(
        W,
        torch.tensor(
            [
                [1.0, 1, 0, 1, 1, 0, 0, 0, 0],
                [0, 1, 1, 0, 1, 1, 0, 0, 0],
                [0, 0, 0, 1, 1, 0, 1, 1, 0],
                [0, 0, 0, 0, 1, 1, 0, 1, 1],
            ]
        ),
    )
    assert torch.equal(corr2d_matmul(X3, K2), corr2d(X3, K2))


def test_kernel_larger_than_input_is_a_clear_error():
    with pytest.raises(ValueError, match="does not fit"):
        corr2d(torch.ones(2, 2), torch.ones(3, 1))
    with pytest.raises(ValueError, match="does not fit"):
        kernel_matrix(torch.ones(1, 4), (3, 3))


def test_conv2d_layer_is_corr2d_plus_bias_and_learns_like_nn_conv2d():
    layer = Conv2D((1, 2))
    reference = nn.Conv2d(1, 1, (1, 2))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -0.2]]))
        layer.bias.fill_(0.5)
        reference.weight.copy_(layer.weight.reshape(1, 1, 1, 2))
        reference.bias.fill_(0.5)
    X = stripes()
    torch.testing.assert_close(layer(X), corr2d(X, layer.weight) + 0.5)
    torch.testing.assert_close(layer(X), reference(X[None, None])[0, 0])
    layer(X).square().sum().backward()
    reference(X[None, None]).square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad.reshape(1, 2))
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad)
    assert Conv2D((3, 3), bias=False).bias is None


def test_backward_of_a_non_scalar_output_is_the_books_error():
    output = Conv2D((3, 3))(torch.ones(5, 5))
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        output.backward()


# --- 7.3 padding and stride --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "p", "s", "shape"),
    [(3, 1, 1, (8, 8)), ((5, 3), (2, 1), 1, (8, 8)), (3, 1, 2, (4, 4)), ((3, 5), (0, 1), (3, 4), (2, 2))],
)
def test_conv_output_shape_book_values(k, p, s, shape):
    assert conv_output_shape(8, k, p, s) == shape
    actual = nn.Conv2d(1, 1, k, padding=p, stride=s)(torch.rand(1, 1, 8, 8)).shape[2:]
    assert tuple(actual) == shape


def test_conv_output_shape_matches_conv2d_on_random_settings():
    generator = torch.Generator().manual_seed(2)
    for _ in range(60):
        n, k, p, s = (torch.randint(1, 6, (2,), generator=generator).tolist() for _ in range(4))
        n = [n_ + k_ + 2 for n_, k_ in zip(n, k, strict=True)]  # always room for one window
        p = [
            min(p_ - 1, k_ // 2) for p_, k_ in zip(p, k, strict=True)
        ]  # torch wants padding ≤ half the kernel
        out = F.conv2d(torch.zeros(1, 1, *n), torch.zeros(1, 1, *k), padding=p, stride=s).shape[2:]
        assert conv_output_shape(n, k, p, s) == tuple(out)


def test_mirror_padding_book_value_and_matches_reflect_pad():
    padded = mirror_pad(torch.arange(1.0, 10.0).reshape(3, 3), 1)
    assert padded[0].tolist() == [5.0, 4.0, 5.0, 6.0, 5.0]
    generator = torch.Generator().manual_seed(3)
    for h, w, _, _ in random_shapes(40, seed=4):
        X = torch.randn(2, 3, h, w, generator=generator)
        p_h, p_w = (torch.randint(0, n, (1,), generator=generator).item() for n in (h, w))
        torch.testing.assert_close(mirror_pad(X, (p_h, p_w)), F.pad(X, (p_w, p_w, p_h, p_h), mode="reflect"))
    with pytest.raises(ValueError, match="mirror padding 3"):
        mirror_pad(torch.ones(3, 3), 3)


# --- 7.4 multiple channels ---------------------------------------------------------------------------


def test_multi_input_and_output_channels_book_values():
    X = torch.stack((X3, X3 + 1))
    K = torch.stack((K2, K2 + 1))
    assert torch.equal(corr2d_multi_in(X, K), torch.tensor([[56.0, 72.0], [104.0, 120.0]]))
    K3 = torch.stack((K, K + 1, K + 2))
    assert K3.shape == (3, 2, 2, 2)
    expected = torch.tensor(
        [[[56.0, 72.0], [104.0, 120.0]], [[76.0, 100.0], [148.0, 172.0]], [[96.0, 128.0], [192.0, 224.0]]]
    )
    assert torch.equal(corr2d_multi_in_out(X, K3), expected)


def test_multi_channel_correlation_matches_conv2d_on_random_shapes():
    generator = torch.Generator().manual_seed(5)
    for h, w, k_h, k_w in random_shapes(40, seed=6):
        c_i, c_o = torch.randint(1, 5, (2,), generator=generator).tolist()
        X = torch.randn(c_i, h, w, generator=generator)
        K = torch.randn(c_o, c_i, k_h, k_w, generator=generator)
        expected = F.conv2d(X[None], K)[0]
        torch.testing.assert_close(corr2d_multi_in_out(X, K), expected)
        torch.testing.assert_close(corr2d_multi_in(X, K[0]), expected[0])


def test_1x1_convolution_as_matmul_equals_the_general_version():
    generator = torch.Generator().manual_seed(7)
    X = torch.normal(0, 1, (3, 3, 3), generator=generator)
    K = torch.normal(0, 1, (2, 3, 1, 1), generator=generator)
    # float32 rounding, not the book's summed 1e-6: matmul and the loop sum in a CPU-dependent order
    torch.testing.assert_close(corr2d_multi_in_out_1x1(X, K), corr2d_multi_in_out(X, K), rtol=1e-6, atol=1e-6)


# --- 7.5 pooling -------------------------------------------------------------------------------------


def test_pool2d_book_values():
    assert torch.equal(pool2d(X3, (2, 2)), torch.tensor([[4.0, 5.0], [7.0, 8.0]]))
    assert torch.equal(pool2d(X3, (2, 2), "avg"), torch.tensor([[2.0, 3.0], [5.0, 6.0]]))
    X = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert pool2d(X, 3, stride=3).tolist() == [[[[10.0]]]]
    assert pool2d(X, 3, padding=1, stride=2)[0, 0].tolist() == [[5.0, 7.0], [13.0, 15.0]]
    assert pool2d(X, (2, 3), padding=(0, 1), stride=(2, 3))[0, 0].tolist() == [[5.0, 7.0], [13.0, 15.0]]
    two_channels = pool2d(torch.cat((X, X + 1), 1), 3, padding=1, stride=2)
    assert two_channels[0, 0].tolist() == [[5.0, 7.0], [13.0, 15.0]]
    assert two_channels[0, 1].tolist() == [[6.0, 8.0], [14.0, 16.0]]


def test_pool2d_matches_torch_pooling_on_random_settings():
    generator = torch.Generator().manual_seed(8)
    for h, w, k_h, k_w in random_shapes(60, seed=9):
        X = torch.randn(2, 3, h, w, generator=generator)
        p = tuple(torch.randint(0, k // 2 + 1, (1,), generator=generator).item() for k in (k_h, k_w))
        s = tuple(torch.randint(1, 4, (2,), generator=generator).tolist())
        torch.testing.assert_close(
            pool2d(X, (k_h, k_w), "max", p, s), F.max_pool2d(X, (k_h, k_w), stride=s, padding=p)
        )
        torch.testing.assert_close(
            pool2d(X, (k_h, k_w), "avg", p, s), F.avg_pool2d(X, (k_h, k_w), stride=s, padding=p)
        )


def test_pool2d_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="'max' or 'avg'"):
        pool2d(X3, 2, "median")


def test_windows_is_a_view_with_the_stride():
    patches = windows(X3, (2, 2), stride=(1, 1))
    assert patches.shape == (2, 2, 2, 2)
    assert patches.data_ptr() == X3.data_ptr()  # no copy of the input
    assert patches[1, 0].tolist() == [[3.0, 4.0], [6.0, 7.0]]
