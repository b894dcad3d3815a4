"""The ``released`` generator is the authors' module: checked against a functional re-implementation.

``authors_forward`` below is written from the description of their code (notes, "The authors' released
code, exactly") with plain ``torch.nn.functional`` calls over a state dict in their key layout; it
shares nothing with ``srfkit.models.generator``.
"""

import pytest
import torch
import torch.nn.functional as F

from srfkit.models import AUTHORS_PREFIX, SRFGenerator, authors_state_dict, load_authors_generator

G = "Generators.0."


def authors_shapes(c: int, blocks: int = 3, growth: int = 32) -> dict[str, tuple[int, ...]]:
    """Every key of the authors' G and its shape."""
    shapes = {f"{G}0.0.weight": (c, c, 3, 3), f"{G}0.0.bias": (c,)}
    for k in range(blocks):
        for i in range(4):
            shapes[f"{G}1.RDBs.{k}.conv{i + 1}.0.weight"] = (growth, c + i * growth, 3, 3)
        shapes[f"{G}1.RDBs.{k}.conv5.weight"] = (c, c + 4 * growth, 3, 3)
    shapes |= {f"{G}2.0.weight": (c, c, 3, 3), f"{G}2.0.bias": (c,)}
    shapes |= {f"{G}3.0.weight": (c, c, 6, 6), f"{G}3.0.bias": (c,)}  # ConvTranspose2d: (in, out, k, k)
    shapes |= {f"{G}4.0.weight": (c, c, 3, 3), f"{G}4.0.bias": (c,)}
    return shapes


def random_authors_state(c: int, blocks: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in authors_shapes(c, blocks).items():
        fan_in = 1 if len(shape) == 1 else shape[1] * shape[2] * shape[3]
        scale = 0.3 if key.endswith("bias") else 1.0 / fan_in**0.5
        state[key] = torch.randn(shape, generator=gen) * scale
    return state


def authors_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, blocks: int = 3) -> torch.Tensor:
    """G(x) + bilinear x2 of x, as the authors' module computes it."""

    def lrelu(t):
        return F.leaky_relu(t, 0.2)

    h = lrelu(F.conv2d(x, sd[f"{G}0.0.weight"], sd[f"{G}0.0.bias"], padding=1))
    rir_in, r = h, h
    for k in range(blocks):
        feats = [r]
        for i in range(1, 5):
            feats.append(lrelu(F.conv2d(torch.cat(feats, 1), sd[f"{G}1.RDBs.{k}.conv{i}.0.weight"], padding=1)))
        r = r + 0.2 * F.conv2d(torch.cat(feats, 1), sd[f"{G}1.RDBs.{k}.conv5.weight"], padding=1)
    h = rir_in + 0.2 * r
    h = lrelu(F.conv2d(h, sd[f"{G}2.0.weight"], sd[f"{G}2.0.bias"], padding=1))
    h = lrelu(F.conv_transpose2d(h, sd[f"{G}3.0.weight"], sd[f"{G}3.0.bias"], stride=2, padding=2))
    h = F.conv2d(h, sd[f"{G}4.0.weight"], sd[f"{G}4.0.bias"], padding=1)
    return h + F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_released_parameter_count_matches_the_authors():
    assert n_params(SRFGenerator(256, variant="released")) == 7_834_624
    assert sum(torch.Size(s).numel() for s in authors_shapes(256).values()) == 7_834_624


@pytest.mark.parametrize("c", [16, 40])
def test_loaded_generator_computes_the_authors_forward(c):
    torch.manual_seed(0)
    state = random_authors_state(c)
    g = load_authors_generator(state).eval()
    assert g.variant == "released" and g.channels == c
    x = torch.randn(2, c, 5, 7)
    with torch.no_grad():
        expected = authors_forward(state, x)
        got = g(x)
    assert got.shape == (2, c, 10, 14)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_loads_from_a_whole_detector_checkpoint_and_round_trips():
    state = random_authors_state(16, seed=1)
    detector = {AUTHORS_PREFIX + k: v for k, v in state.items()}
    detector |= {"backbone.fpn_lateral2.weight": torch.zeros(16, 8, 1, 1), "roi_heads.fc1.bias": torch.zeros(4)}
    g = load_authors_generator(detector)
    back = authors_state_dict(g)
    assert list(back) == list(authors_shapes(16))
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    prefixed = authors_state_dict(g, prefix=AUTHORS_PREFIX)
    assert set(prefixed) == {AUTHORS_PREFIX + k for k in state}


def test_number_of_dense_blocks_is_read_from_the_weights():
    state = random_authors_state(8, blocks=2)
    g = load_authors_generator(state)
    assert len(g.net[1].RDBs) == 2
    x = torch.randn(1, 8, 4, 3)
    with torch.no_grad():
        torch.testing.assert_close(g(x), authors_forward(state, x, blocks=2), rtol=0, atol=1e-5)


def test_mismatches_are_named():
    state = random_authors_state(8)
    del state[f"{G}4.0.bias"]
    state[f"{G}1.RDBs.0.conv1.0.bias"] = torch.zeros(32)  # the authors' dense convs have no bias
    state[f"{G}2.0.weight"] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(ValueError) as err:
        load_authors_generator(state)
    message = str(err.value)
    assert f"missing keys: {G}4.0.bias" in message
    assert f"unexpected keys: {G}1.RDBs.0.conv1.0.bias" in message
    assert f"{G}2.0.weight (8, 8, 1, 1) (expected (8, 8, 3, 3))" in message


def test_a_state_dict_without_the_generator_is_refused():
    with pytest.raises(ValueError, match="Generators.0.0.0.weight"):
        load_authors_generator({"backbone.fpn_lateral2.weight": torch.zeros(1)})
    stray = random_authors_state(8) | {"extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="unexpected keys: extra.weight"):
        load_authors_generator(stray)


def test_only_released_generators_have_the_authors_layout():
    with pytest.raises(ValueError, match="released"):
        authors_state_dict(SRFGenerator(8, variant="paper"))


def test_released_structure_and_initialisation():
    """LReLU after the first conv, bias-free dense convs, Kaiming-normal x 0.1 on every conv, biases 0."""
    torch.manual_seed(0)
    g = SRFGenerator(64, variant="released")
    first = g.net[0]
    assert isinstance(first[1], torch.nn.LeakyReLU) and first[1].negative_slope == 0.2
    convs = [m for m in g.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(convs) == 4 + 3 * 5
    for block in g.net[1].RDBs:
        for conv in (block.conv1[0], block.conv2[0], block.conv3[0], block.conv4[0], block.conv5):
            assert conv.bias is None
    for conv in convs:
        if conv.bias is not None:
            assert torch.count_nonzero(conv.bias) == 0
        w = conv.weight
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]  # torch's fan-in, also for the transposed conv
        assert w.std().item() == pytest.approx(0.1 * (2 / fan_in) ** 0.5, rel=0.1)
