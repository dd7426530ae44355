//! A set of tensors kept in one contiguous buffer, each tensor a view of its slice.
//!
//! The trainer keeps each tower's weights this way (and the moving average, and the step's
//! gradients), so that what touches every weight touches one buffer: the cross-tower
//! reduction is one add per tower, the broadcast back one copy per tower, the SGD update and
//! the moving average one kernel each, instead of one kernel per tensor (70+ launches a step
//! on a GPU with towers).
//!
//! Each slice holds its tensor in the tensor's memory order: a channels-last `[N,C,H,W]`
//! tensor (the layout of the CPU network's kernels, see [`crate::model::in_layout`]) is
//! stored as `[N,H,W,C]` and viewed back with a permutation, so the views keep the layout
//! the network computes in, and a buffer built for one layout is read back in the same one.

use tch::Tensor;

use crate::error::TrainError;
use crate::model::is_channels_last;

/// `t`'s values flattened in the memory order of `like` (a tensor of the same shape): for a
/// channels-last `like`, NHWC order, else row-major order. Free when `t` already has that
/// layout; a copy otherwise, so the result is right whatever `t`'s own layout.
pub fn flatten_as(t: &Tensor, like: &Tensor) -> Result<Tensor, TrainError> {
    if is_channels_last(like) {
        Ok(t.f_permute([0, 2, 3, 1])?.f_reshape([-1])?)
    } else {
        Ok(t.f_reshape([-1])?)
    }
}

/// One buffer holding `tensors` back to back, each in its own memory order (see
/// [`flatten_as`]), on the tensors' device.
pub fn concat(tensors: &[Tensor], like: &[Tensor]) -> Result<Tensor, TrainError> {
    let parts = tensors.iter().zip(like).map(|(t, l)| flatten_as(t, l)).collect::<Result<Vec<_>, _>>()?;
    Ok(Tensor::f_cat(&parts, 0)?)
}

/// Views of `flat` with the shapes and layouts of `like`, in order: what [`concat()`] packed,
/// seen as tensors again. Writing through a view writes the buffer.
pub fn views(flat: &Tensor, like: &[Tensor]) -> Result<Vec<Tensor>, TrainError> {
    let (have, need) = (flat.numel() as i64, total_len(like));
    if flat.dim() != 1 || have != need {
        return Err(TrainError::Config(format!(
            "a buffer of {have} values (shape {:?}) seen as tensors of {need} values",
            flat.size()
        )));
    }
    let mut offset = 0;
    let mut out = Vec::with_capacity(like.len());
    for l in like {
        let len = l.numel() as i64;
        let slice = flat.f_narrow(0, offset, len)?;
        out.push(if is_channels_last(l) {
            let s = l.size();
            slice.f_view([s[0], s[2], s[3], s[1]])?.f_permute([0, 3, 1, 2])?
        } else {
            slice.f_view(l.size().as_slice())?
        });
        offset += len;
    }
    Ok(out)
}

/// Values a buffer holding `like` has: [`views`] checks that a buffer holds exactly the
/// tensors it is viewed as.
pub fn total_len(like: &[Tensor]) -> i64 {
    like.iter().map(|t| t.numel() as i64).sum()
}

/// A fresh buffer holding copies of `tensors`, with views shaped like them.
pub fn copy_of(tensors: &[Tensor]) -> Result<(Tensor, Vec<Tensor>), TrainError> {
    // `cat` always allocates, so the buffer is a copy even of a single tensor.
    let flat = tch::no_grad(|| concat(&tensors.iter().map(Tensor::detach).collect::<Vec<_>>(), tensors))?;
    let views = views(&flat, tensors)?;
    Ok((flat, views))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::in_layout;
    use tch::{Device, Kind};

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn views_give_back_what_concat_packed_in_each_layout() {
        let a = in_layout(Tensor::randn([4, 3, 5, 5], (Kind::Float, Device::Cpu))).unwrap();
        let b = Tensor::randn([7], (Kind::Float, Device::Cpu));
        assert!(is_channels_last(&a));
        let like = [a.shallow_clone(), b.shallow_clone()];
        let flat = concat(&like, &like).unwrap();
        assert_eq!(flat.size(), [total_len(&like)]);
        let back = views(&flat, &like).unwrap();
        assert!(is_channels_last(&back[0]), "the view keeps the channels-last layout");
        assert_eq!(values(&back[0]), values(&a));
        assert_eq!(values(&back[1]), values(&b));
        let err = views(&flat.narrow(0, 0, 10), &like).unwrap_err().to_string();
        assert!(err.contains("a buffer of 10 values") && err.contains("307 values"), "{err}");
        // the channels-last tensor's slice is in memory (NHWC) order
        assert_eq!(values(&flat.narrow(0, 0, 300)), values(&a.permute([0, 2, 3, 1])));
    }

    #[test]
    fn a_row_major_tensor_is_packed_like_its_channels_last_twin() {
        // A gradient may come back in another layout than its weight: it is still packed in
        // the weight's order.
        let weight = in_layout(Tensor::zeros([2, 3, 2, 2], (Kind::Float, Device::Cpu))).unwrap();
        let grad = Tensor::arange(24, (Kind::Float, Device::Cpu)).view([2, 3, 2, 2]);
        let flat = concat(std::slice::from_ref(&grad), std::slice::from_ref(&weight)).unwrap();
        let back = views(&flat, std::slice::from_ref(&weight)).unwrap();
        assert_eq!(values(&back[0]), values(&grad));
    }

    #[test]
    fn writes_through_a_view_reach_the_buffer_and_copies_are_independent() {
        let like = [Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)), Tensor::ones([3], (Kind::Float, Device::Cpu))];
        let (flat, mut v) = copy_of(&like).unwrap();
        let _ = v[1].fill_(5.0);
        assert_eq!(values(&flat), [0.0, 0.0, 0.0, 0.0, 5.0, 5.0, 5.0]);
        assert_eq!(values(&like[1]), [1.0, 1.0, 1.0], "the source is untouched");
    }
}
