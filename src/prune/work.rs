//! Work accounting (DESIGN.md §2). Pruning acts after layer l's attention,
//! so layer l's attention block runs on the tokens entering it and its FFN
//! already on the tokens kept. Three views are reported together:
//! - relative work: Σ_l entering_l / (L · real tokens);
//! - relative FLOPs (LTP/ToP's convention): per layer, the attention block
//!   (Q/K/V/output projections, 4·n·d², and the n² score and A·V products,
//!   2·n²·d) at the n tokens entering, the FFN (2·k·d·f) at the k kept, over
//!   the same for the unpruned model on the real tokens (no padding);
//! - secure cost: the two-party protocol's online bytes and rounds, from
//!   the shapes alone ([`crate::mpc::cost`]).
//!
//! Every view is a per-example ratio, averaged over examples.

use candle_core::Tensor;

use crate::error::Result;

/// The sizes the FLOPs of a layer depend on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerDims {
    pub hidden: usize,
    pub intermediate: usize,
}

impl LayerDims {
    /// Multiply-accumulates of the attention block at `n` tokens.
    pub fn attention(&self, n: f64) -> f64 {
        let d = self.hidden as f64;
        4.0 * n * d * d + 2.0 * n * n * d
    }

    /// Multiply-accumulates of the FFN at `k` tokens.
    pub fn ffn(&self, k: f64) -> f64 {
        2.0 * k * self.hidden as f64 * self.intermediate as f64
    }

    /// FLOPs of a pruned forward over the unpruned one's, for one example
    /// of `real` tokens: `entering[l]` tokens enter layer l, `kept[l]`
    /// leave it.
    ///
    /// # Panics
    /// If the two lists differ in length.
    pub fn relative_flops(&self, real: usize, entering: &[usize], kept: &[usize]) -> f64 {
        assert_eq!(entering.len(), kept.len(), "entering and kept per layer");
        let n = real.max(1) as f64;
        let full = entering.len() as f64 * (self.attention(n) + self.ffn(n));
        let pruned: f64 = entering.iter().zip(kept).map(|(&e, &k)| self.attention(e as f64) + self.ffn(k as f64)).sum();
        pruned / full
    }

    /// Relative work of one example: Σ_l entering_l / (L · real).
    pub fn relative_work(real: usize, entering: &[usize]) -> f64 {
        entering.iter().sum::<usize>() as f64 / (entering.len().max(1) as f64 * real.max(1) as f64)
    }

    /// The soft version of [`LayerDims::relative_flops`], differentiable:
    /// `real` (b,) real tokens; per layer, `entering[l]` and `kept[l]` (b,)
    /// expected counts. Returns the (b,) ratios.
    pub fn relative_flops_soft(&self, real: &Tensor, entering: &[Tensor], kept: &[Tensor]) -> Result<Tensor> {
        let d = self.hidden as f64;
        let attn = |n: &Tensor| -> Result<Tensor> { Ok(((n * (4.0 * d * d))? + (n.sqr()? * (2.0 * d))?)?) };
        let ffn = |k: &Tensor| -> Result<Tensor> { Ok((k * (2.0 * d * self.intermediate as f64))?) };
        let full = ((attn(real)? + ffn(real)?)? * entering.len() as f64)?;
        let mut pruned = real.zeros_like()?;
        for (e, k) in entering.iter().zip(kept) {
            pruned = ((pruned + attn(e)?)? + ffn(k)?)?;
        }
        Ok(pruned.div(&full)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    const MINILM: LayerDims = LayerDims { hidden: 384, intermediate: 1536 };

    #[test]
    fn unpruned_is_one_and_the_ffn_is_charged_at_the_kept_tokens() {
        assert_eq!(MINILM.relative_flops(20, &[20; 6], &[20; 6]), 1.0);
        // Keeping 10 of 20 after layer 0 only: the layer-0 FFN and layers
        // 1–5 run on 10 tokens.
        let (d, f, n) = (384.0, 1536.0, 20.0);
        let layer = |n: f64, k: f64| 4.0 * n * d * d + 2.0 * n * n * d + 2.0 * k * d * f;
        let want = (layer(n, 10.0) + 5.0 * layer(10.0, 10.0)) / (6.0 * layer(n, n));
        let got = MINILM.relative_flops(20, &[20, 10, 10, 10, 10, 10], &[10; 6]);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        // The FFN is 2/3 of a layer's linear work at d_ff = 4d, so FLOPs
        // fall faster than relative work when tokens leave after layer l.
        assert!(got < LayerDims::relative_work(20, &[20, 10, 10, 10, 10, 10]));
    }

    #[test]
    fn the_soft_version_matches_the_counted_one_on_whole_counts() {
        let dev = &Device::Cpu;
        let t = |v: &[f32]| Tensor::new(v, dev).unwrap();
        let real = t(&[20.0, 7.0]);
        let entering = vec![t(&[20.0, 7.0]), t(&[12.0, 5.0])];
        let kept = vec![t(&[12.0, 5.0]), t(&[3.0, 5.0])];
        let got = MINILM.relative_flops_soft(&real, &entering, &kept).unwrap().to_vec1::<f32>().unwrap();
        let want = [MINILM.relative_flops(20, &[20, 12], &[12, 3]), MINILM.relative_flops(7, &[7, 5], &[5, 5])];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
        }
    }
}
