"""Section 4.2's target sources: one image, class mean, nearest neighbour."""

import pytest
import torch

from pagcore.base.validation import ConfigError
from pagcore.paper.targets import (
    RepresentativeSource,
    build_target_source,
    class_mean_representatives,
    nearest_neighbor_index,
    one_image_representatives,
)


@pytest.fixture
def points():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, generator=generator)
    y = torch.randint(0, 3, (300,), generator=generator)
    return x, y


class TestNearestNeighbor:
    def test_never_returns_the_sample_itself_even_when_it_is_in_the_pool(self, points):
        x, y = points
        # The pool is the whole class, so every sample is in its own class's pool.
        index = nearest_neighbor_index(x, y, 3, pool_size=1000, seed=0)
        rows = torch.arange(len(x))
        assert (index[rows, y] != rows).all()

    def test_duplicates_of_a_sample_are_valid_neighbours(self):
        x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [1.0, 1.0]])
        y = torch.tensor([0, 0, 0, 1])
        index = nearest_neighbor_index(x, y, 2, pool_size=10, seed=0)
        assert index[0, 0] == 1 and index[1, 0] == 0  # the twin, at distance 0, not itself

    def test_neighbour_is_the_closest_member_of_the_pool(self, points):
        x, y = points
        index = nearest_neighbor_index(x, y, 3, pool_size=1000, seed=0)
        for i in range(0, len(x), 37):
            for c in range(3):
                members = torch.nonzero(y == c).flatten()
                members = members[members != i]
                best = members[(x[members] - x[i]).norm(dim=1).argmin()]
                assert torch.isclose((x[index[i, c]] - x[i]).norm(), (x[best] - x[i]).norm())
                assert y[index[i, c]] == c

    @pytest.mark.parametrize("offset", [0.0, 50.0, 1e4])
    def test_exact_far_from_the_origin(self, offset):
        """Points on a line far from the origin, spaced by hundredths: the toy's geometry, where
        |q|^2 - 2 q.p + |p|^2 in float32 picks wrong neighbours. Compared with brute force in float64."""
        generator = torch.Generator().manual_seed(1)
        t = offset + torch.randn(400, generator=generator, dtype=torch.float64)
        x = torch.stack([t, 2 * t], dim=1).float()
        y = torch.randint(0, 2, (400,), generator=generator)
        index = nearest_neighbor_index(x, y, 2, pool_size=1000, seed=0)
        exact = x.double()
        distances = torch.cdist(exact, exact)
        distances.fill_diagonal_(float("inf"))
        for c in range(2):
            others = torch.where(y == c, 0.0, float("inf")).double()
            best = (distances + others).argmin(dim=1)
            chosen = distances[torch.arange(400), index[:, c]]
            torch.testing.assert_close(chosen, distances[torch.arange(400), best], rtol=0, atol=0)

    def test_pool_limits_the_candidates(self, points):
        x, y = points
        index = nearest_neighbor_index(x, y, 3, pool_size=5, seed=3)
        for c in range(3):
            assert len(index[:, c].unique()) <= 5

    def test_pool_of_one_is_rejected(self, points):
        with pytest.raises(ConfigError, match="pool_size"):
            nearest_neighbor_index(*points, 3, pool_size=1, seed=0)

    def test_gradients_point_from_sample_to_neighbour(self, points):
        x, y = points
        source = build_target_source("nearest_neighbor", x, y, 3, pool_size=50, seed=0)
        rows = torch.tensor([4, 9])
        classes = torch.tensor([[0, 2], [1, 1]])
        g = source.target_gradients(x[rows], rows, classes)
        assert g.shape == (2, 2, 2)
        torch.testing.assert_close(g[0, 1], x[source.neighbor_index[4, 2]] - x[4])

    def test_uint8_images_are_compared_as_floats(self):
        images = torch.tensor([[[[0]]], [[[10]]], [[[250]]], [[[255]]]], dtype=torch.uint8)  # (4,1,1,1)
        labels = torch.tensor([0, 0, 1, 1])
        index = nearest_neighbor_index(images, labels, 2, pool_size=2, seed=0)
        assert index[:, 0].tolist() == [1, 0, 1, 1]
        assert index[:, 1].tolist() == [2, 2, 3, 2]
        source = build_target_source("nearest_neighbor", images, labels, 2, pool_size=2)
        x = images[:1].float() / 255
        g = source.target_gradients(x, torch.tensor([0]), torch.tensor([[1]]))
        torch.testing.assert_close(g[0, 0], torch.full((1, 1, 1), 250 / 255))


class TestRepresentatives:
    def test_one_image_is_a_seeded_member_of_its_class(self, points):
        x, y = points
        reps = one_image_representatives(x, y, 3, seed=7)
        assert torch.equal(reps, one_image_representatives(x, y, 3, seed=7))
        assert not torch.equal(reps, one_image_representatives(x, y, 3, seed=8))
        for c in range(3):
            matches = (x == reps[c]).all(dim=1)
            assert matches.any() and (y[matches] == c).all()

    def test_class_mean_without_rescaling(self, points):
        x, y = points
        reps = class_mean_representatives(x, y, 3, rescale=False)
        for c in range(3):
            torch.testing.assert_close(reps[c], x[y == c].mean(dim=0), rtol=1e-5, atol=1e-6)

    def test_rescaled_class_mean_has_the_average_sample_norm(self, points):
        x, y = points
        x = x + torch.tensor([3.0, 0.0])
        center = 0.5
        reps = class_mean_representatives(x, y, 3, rescale=True, center=center)
        for c in range(3):
            members = x[y == c]
            mean = members.mean(dim=0)
            # Same direction from the centre, stretched to the average distance.
            assert torch.nn.functional.cosine_similarity(reps[c] - center, mean - center, dim=0) > 0.9999
            expected = (members - center).norm(dim=1).mean()
            assert torch.isclose((reps[c] - center).norm(), expected, rtol=1e-5)

    def test_representative_gradients_with_a_transform(self):
        reps = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        source = RepresentativeSource("class_mean", reps)
        x = torch.tensor([[0.5, 0.5]])
        g = source.target_gradients(x, torch.tensor([0]), torch.tensor([[1, 0]]), transform=lambda t: t.flip(-1))
        torch.testing.assert_close(g, torch.tensor([[[3.5, 2.5], [1.5, 0.5]]]))

    def test_empty_class_is_reported(self):
        x, y = torch.randn(4, 2), torch.tensor([0, 0, 2, 2])
        with pytest.raises(ConfigError, match=r"class\(es\) \[1\]"):
            build_target_source("class_mean", x, y, 3)


def test_unknown_source_names_the_allowed_values(points):
    with pytest.raises(ConfigError, match="source must be one of 'one_image', 'class_mean', 'nearest_neighbor'"):
        build_target_source("nearest", *points, 3)
