import torch

from vitssl.methods.views import concat_views, resolution_batches


def test_slices_of_one_rendered_tensor_are_joined_without_a_copy():
    rendered = torch.randn(3, 4, 3, 8, 8)  # 3 views of 4 images, as GPUMultiCrop renders one size
    views = list(rendered.unbind(0))
    joined = concat_views(views[:2])
    assert torch.equal(joined, torch.cat(views[:2]))
    assert joined.data_ptr() == rendered.data_ptr()  # no copy
    rendered[1, 0] += 1.0
    assert torch.equal(joined[4], rendered[1, 0])


def test_views_that_are_not_back_to_back_are_copied():
    rendered = torch.randn(3, 4, 3, 8, 8)
    views = list(rendered.unbind(0))
    for group in ([views[0], views[2]], [views[1], views[0]], [torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)],
                  [rendered[:, :2].unbind(0)[0], rendered[:, :2].unbind(0)[1]]):
        joined = concat_views(list(group))
        assert torch.equal(joined, torch.cat(list(group)))
        assert joined.data_ptr() != rendered.data_ptr() or not group[0].is_contiguous()


def test_resolution_batches_follow_the_view_order():
    big, small = torch.randn(2, 2, 3, 8, 8), torch.randn(3, 2, 3, 4, 4)
    batches = resolution_batches(list(big.unbind(0)) + list(small.unbind(0)))
    assert [tuple(b.shape) for b in batches] == [(4, 3, 8, 8), (6, 3, 4, 4)]
    assert torch.equal(batches[1], small.reshape(6, 3, 4, 4))
