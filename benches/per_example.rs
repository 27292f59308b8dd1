//! The per-example layout that `reg4rec-model` replaced, kept runnable only so the `pretrain` bench can compare
//! one training step of both layouts at the same model size.
//!
//! Every (history, target) example runs its own encoder pass over the token-level history: for each of the last
//! `L` items `<SEP>` then its M tokens (`L * (M + 1)` positions, left-padded), embedded as token + codebook type +
//! position; a pre-norm decoder with causal self-attention and cross-attention to that memory generates the
//! target's tokens after `<BOS>` with CRSS step selection. The losses are `reg4rec_model::crss::step_losses`,
//! the same as the per-user model's; the item head does not exist in this layout.

use reg4rec_model::config::ModelConfig;
use reg4rec_model::crss::{select_order_with, step_losses};
use reg4rec_model::decoding::{Vocab, BOS, PAD, SEP};
use reg4rec_model::Decoded;
use reg4rec_tokenizer::Codes;
use tch::{nn, Kind, Tensor};

fn linear(p: nn::Path, i: usize, o: usize) -> nn::Linear {
    nn::linear(p, i as i64, o as i64, Default::default())
}

fn norm(p: nn::Path, d: usize) -> nn::LayerNorm {
    nn::layer_norm(p, vec![d as i64], Default::default())
}

struct Attention {
    q: nn::Linear,
    k: nn::Linear,
    v: nn::Linear,
    o: nn::Linear,
    heads: i64,
}

impl Attention {
    fn new(p: nn::Path, d: usize, heads: usize) -> Self {
        Attention {
            q: linear(&p / "q", d, d),
            k: linear(&p / "k", d, d),
            v: linear(&p / "v", d, d),
            o: linear(&p / "o", d, d),
            heads: heads as i64,
        }
    }

    fn forward(&self, x: &Tensor, kv: &Tensor, attend: Option<&Tensor>, causal: bool) -> Tensor {
        let (b, t, d) = (x.size()[0], x.size()[1], x.size()[2]);
        let s = kv.size()[1];
        let h = self.heads;
        let split = |y: Tensor, len: i64| y.view([b, len, h, d / h]).transpose(1, 2);
        let (q, k, v) = (
            split(x.apply(&self.q), t),
            split(kv.apply(&self.k), s),
            split(kv.apply(&self.v), s),
        );
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, attend, 0.0, causal, None, false);
        y.transpose(1, 2)
            .contiguous()
            .view([b, t, d])
            .apply(&self.o)
    }
}

struct FeedForward(nn::Linear, nn::Linear);

impl FeedForward {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.apply(&self.0).gelu("none").apply(&self.1)
    }
}

struct EncoderLayer(nn::LayerNorm, Attention, nn::LayerNorm, FeedForward);
struct DecoderLayer(
    nn::LayerNorm,
    Attention,
    nn::LayerNorm,
    Attention,
    nn::LayerNorm,
    FeedForward,
);

/// The per-example encoder-decoder (dropout off: the bench times compute).
pub struct PerExampleModel {
    pub vs: nn::VarStore,
    vocab: Vocab,
    history_len: usize,
    token_types: Tensor,
    tok_emb: nn::Embedding,
    type_emb: nn::Embedding,
    enc_pos: nn::Embedding,
    dec_pos: nn::Embedding,
    encoder: Vec<EncoderLayer>,
    enc_norm: nn::LayerNorm,
    decoder: Vec<DecoderLayer>,
    dec_norm: nn::LayerNorm,
    token_head: nn::Linear,
    category_head: nn::Linear,
}

impl PerExampleModel {
    pub fn new(cfg: &ModelConfig, vocab: Vocab, n_categories: usize) -> Self {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let r = vs.root();
        let (d, m) = (cfg.d_model, vocab.m);
        let emb =
            |name: &str, n: usize| nn::embedding(&r / name, n as i64, d as i64, Default::default());
        let ffn = |p: nn::Path| {
            FeedForward(
                linear(&p / "up", d, cfg.d_ff),
                linear(&p / "down", cfg.d_ff, d),
            )
        };
        let half = cfg.n_layers / 2;
        let types: Vec<i64> = (0..vocab.size() as i64)
            .map(|t| vocab.codebook_of(t).unwrap_or(m) as i64)
            .collect();
        PerExampleModel {
            token_types: Tensor::from_slice(&types),
            tok_emb: emb("tok_emb", vocab.size()),
            type_emb: emb("type_emb", m + 1),
            enc_pos: emb("enc_pos", cfg.history_len * (m + 1)),
            dec_pos: emb("dec_pos", m + 1),
            encoder: (0..half)
                .map(|i| {
                    let p = &r / "encoder" / i;
                    EncoderLayer(
                        norm(&p / "n1", d),
                        Attention::new(&p / "attn", d, cfg.n_heads),
                        norm(&p / "n2", d),
                        ffn(&p / "ffn"),
                    )
                })
                .collect(),
            enc_norm: norm(&r / "enc_norm", d),
            decoder: (0..half)
                .map(|i| {
                    let p = &r / "decoder" / i;
                    DecoderLayer(
                        norm(&p / "n1", d),
                        Attention::new(&p / "self", d, cfg.n_heads),
                        norm(&p / "n2", d),
                        Attention::new(&p / "cross", d, cfg.n_heads),
                        norm(&p / "n3", d),
                        ffn(&p / "ffn"),
                    )
                })
                .collect(),
            dec_norm: norm(&r / "dec_norm", d),
            token_head: linear(&r / "token_head", d, vocab.size()),
            category_head: linear(&r / "category_head", d, n_categories),
            vs,
            vocab,
            history_len: cfg.history_len,
        }
    }

    fn embed(&self, tokens: &Tensor, pos: &nn::Embedding, offset: i64) -> Tensor {
        let t = tokens.size()[1];
        let types = self
            .token_types
            .index_select(0, &tokens.flatten(0, -1))
            .view_as(tokens);
        tokens.apply(&self.tok_emb)
            + types.apply(&self.type_emb)
            + Tensor::arange_start(offset, offset + t, (Kind::Int64, tokens.device()))
                .apply(pos)
                .unsqueeze(0)
    }

    /// Encoder input `[B, L * (M + 1)]` of (history) examples: per item `<SEP>` and its tokens, left-padded.
    pub fn history_tokens(&self, histories: &[&[u32]], codes: &Codes) -> Tensor {
        let w = self.vocab.m + 1;
        let s = self.history_len * w;
        let mut ids = vec![PAD; histories.len() * s];
        for (row, h) in ids.chunks_mut(s).zip(histories) {
            let h = &h[h.len().saturating_sub(self.history_len)..];
            let start = s - h.len() * w;
            for (slot, &item) in row[start..].chunks_mut(w).zip(h) {
                slot[0] = SEP;
                slot[1..].copy_from_slice(&self.vocab.item_tokens(codes.tuple(item as usize)));
            }
        }
        Tensor::from_slice(&ids).view([histories.len() as i64, s as i64])
    }

    /// Memory `[B, S, d]` and its attention mask `[B, 1, 1, S]`.
    fn encode(&self, history: &Tensor) -> (Tensor, Tensor) {
        let s = history.size()[1];
        let last = Tensor::arange(s, (Kind::Int64, history.device())).eq(s - 1);
        let attend = history.ne(PAD).logical_or(&last).unsqueeze(1).unsqueeze(1);
        let mut x = self.embed(history, &self.enc_pos, 0);
        for l in &self.encoder {
            let h = x.apply(&l.0);
            x = &x + l.1.forward(&h, &h, Some(&attend), false);
            x = &x + l.3.forward(&x.apply(&l.2));
        }
        (x.apply(&self.enc_norm), attend)
    }

    fn decode(&self, memory: &(Tensor, Tensor), fed: &Tensor) -> Decoded {
        let b = fed.size()[0];
        let bos = Tensor::full([b, 1], BOS, (Kind::Int64, fed.device()));
        let mut x = self.embed(
            &Tensor::cat(&[bos, fed.shallow_clone()], 1),
            &self.dec_pos,
            0,
        );
        for l in &self.decoder {
            let h = x.apply(&l.0);
            x = &x + l.1.forward(&h, &h, None, true);
            x = &x
                + l.3
                    .forward(&x.apply(&l.2), &memory.0, Some(&memory.1), false);
            x = &x + l.5.forward(&x.apply(&l.4));
        }
        let h = x.apply(&self.dec_norm);
        Decoded {
            token_logits: h.apply(&self.token_head),
            category_logits: h.apply(&self.category_head),
        }
    }

    /// The CRSS pre-training loss (token + `lambda_cat` * category) of a batch of examples: `history` from
    /// [`Self::history_tokens`], `targets` `[B, M]` in codebook order, `categories` `[B]`.
    pub fn loss(
        &self,
        history: &Tensor,
        targets: &Tensor,
        categories: &Tensor,
        lambda_cat: f64,
    ) -> Tensor {
        let m = self.vocab.m as i64;
        let memory = self.encode(history);
        let detached = (memory.0.detach(), memory.1.shallow_clone());
        let fed = select_order_with(targets, |fed| {
            self.decode(&detached, fed).token_logits.select(1, -1)
        });
        let out = self.decode(&memory, &fed.narrow(1, 0, m - 1));
        let (token, category) = step_losses(
            reg4rec_model::Mode::Reg4rec,
            reg4rec_model::PathScore::Open,
            reg4rec_model::config::StepTarget::Set,
            &self.vocab,
            &out,
            &fed,
            targets,
            categories,
        );
        token + category * lambda_cat
    }
}
