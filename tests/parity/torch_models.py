"""torch_models.py -- plain-PyTorch references of the moekd::nn layers, for check_parity.py.

Written from the fairseq / HF definitions (fairseq's TransformerEncoderLayer / DecoderLayer /
TransformerModel, HF's BertForMaskedLM and ViTForImageClassification), not from the C++ code,
with moekd's parameter names so the dumped state dicts load by name. Where a torch.nn module is
the reference (Linear, Embedding, LayerNorm, MultiheadAttention, Conv2d for the ViT patches),
it is used directly. Shapes: x (B, T, D); masks are bool with True = padded / not allowed.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def act_fn(name):
    return {"relu": F.relu, "gelu": F.gelu}[name]


class MHA(nn.Module):
    """fairseq MultiheadAttention (q_proj, k_proj, v_proj, out_proj), batch-first."""

    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, q, k, v, key_padding_mask=None, causal=False):
        B, T, D = q.shape
        S, H = k.shape[1], self.h
        dh = D // H
        qh = self.q_proj(q).view(B, T, H, dh).transpose(1, 2)
        kh = self.k_proj(k).view(B, S, H, dh).transpose(1, 2)
        vh = self.v_proj(v).view(B, S, H, dh).transpose(1, 2)
        scores = (qh * dh ** -0.5) @ kh.transpose(-1, -2)  # (B, H, T, S)
        mask = None
        if key_padding_mask is not None:
            mask = key_padding_mask[:, None, None, :]
        if causal:
            future = torch.ones(T, S, dtype=torch.bool).triu(1)
            mask = future if mask is None else mask | future
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        ctx = (scores.softmax(-1) @ vh).transpose(1, 2).reshape(B, T, D)
        return self.out_proj(ctx)


class FeedForward(nn.Module):
    def __init__(self, d, f, act):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(d, f), nn.Linear(f, d), act_fn(act)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Adapter(nn.Module):
    """Houlsby: h + up_proj(act(down_proj(h)))."""

    def __init__(self, d, m, act):
        super().__init__()
        self.down_proj, self.up_proj, self.act = nn.Linear(d, m), nn.Linear(m, d), act_fn(act)

    def forward(self, h):
        return h + self.up_proj(self.act(self.down_proj(h)))


class _Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.pre = c["pre_norm"]

    def block(self, x, norm, f, adapter=None):
        if self.pre:  # x + adapter(f(LN(x)))
            h = f(norm(x))
            return x + (adapter(h) if adapter is not None else h)
        h = f(x)  # LN(x + adapter(f(x)))
        return norm(x + (adapter(h) if adapter is not None else h))

    def _ffn_and_adapters(self, c):
        d = c["d_model"]
        self.ffn = FeedForward(d, c["ffn_dim"], c["activation"])
        self.final_layer_norm = nn.LayerNorm(d, eps=c["ln_eps"])
        if c["adapters"]:
            self.self_attn_adapter = Adapter(d, c["adapter_dim"], c["adapter_activation"])
            self.ffn_adapter = Adapter(d, c["adapter_dim"], c["adapter_activation"])
        else:
            self.self_attn_adapter = self.ffn_adapter = None


class EncoderLayer(_Layer):
    def __init__(self, c):
        super().__init__(c)
        d = c["d_model"]
        self.self_attn = MHA(d, c["num_heads"])
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=c["ln_eps"])
        self._ffn_and_adapters(c)

    def forward(self, x, key_padding_mask=None):
        x = self.block(x, self.self_attn_layer_norm, lambda h: self.self_attn(h, h, h, key_padding_mask),
                       self.self_attn_adapter)
        return self.block(x, self.final_layer_norm, self.ffn, self.ffn_adapter)


class DecoderLayer(_Layer):
    def __init__(self, c):
        super().__init__(c)
        d = c["d_model"]
        self.self_attn = MHA(d, c["num_heads"])
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=c["ln_eps"])
        self.encoder_attn = MHA(d, c["num_heads"])
        self.encoder_attn_layer_norm = nn.LayerNorm(d, eps=c["ln_eps"])
        self._ffn_and_adapters(c)

    def forward(self, x, enc, self_padding_mask=None, enc_padding_mask=None):
        x = self.block(x, self.self_attn_layer_norm, lambda h: self.self_attn(h, h, h, self_padding_mask, True),
                       self.self_attn_adapter)
        x = self.block(x, self.encoder_attn_layer_norm, lambda h: self.encoder_attn(h, enc, enc, enc_padding_mask))
        return self.block(x, self.final_layer_norm, self.ffn, self.ffn_adapter)


def sinusoidal(tokens, dim, padding_idx, dtype):
    """fairseq SinusoidalPositionalEmbedding (table computed in float64, rounded once to dtype)."""
    mask = tokens.ne(padding_idx).long()
    positions = torch.cumsum(mask, dim=1) * mask + padding_idx  # pads -> padding_idx
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float64) * -(math.log(10000.0) / (half - 1)))
    ang = positions.to(torch.float64).unsqueeze(-1) * freq
    emb = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    emb = emb.masked_fill(tokens.eq(padding_idx).unsqueeze(-1), 0.0)
    return emb.to(dtype)


def pad_mask(tokens, padding_idx):
    m = tokens.eq(padding_idx)
    return m if m.any() else None


class TransformerEncoder(nn.Module):
    def __init__(self, c, n, embed_tokens):
        super().__init__()
        self.embed_tokens, self.pad, self.d = embed_tokens, embed_tokens.padding_idx, c["d_model"]
        self.layers = nn.ModuleList(EncoderLayer(c) for _ in range(n))
        self.layer_norm = nn.LayerNorm(self.d, eps=c["ln_eps"]) if c["pre_norm"] else None

    def forward(self, src):
        x = math.sqrt(self.d) * self.embed_tokens(src) + sinusoidal(src, self.d, self.pad, self.embed_tokens.weight.dtype)
        mask = pad_mask(src, self.pad)
        if mask is not None:
            x = x * (1 - mask.unsqueeze(-1).type_as(x))
        for l in self.layers:
            x = l(x, mask)
        return self.layer_norm(x) if self.layer_norm is not None else x


class TransformerDecoder(nn.Module):
    def __init__(self, c, n, embed_tokens):
        super().__init__()
        self.embed_tokens, self.pad, self.d = embed_tokens, embed_tokens.padding_idx, c["d_model"]
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(n))
        self.layer_norm = nn.LayerNorm(self.d, eps=c["ln_eps"]) if c["pre_norm"] else None
        self.output_projection = nn.Linear(self.d, embed_tokens.num_embeddings, bias=False)
        self.output_projection.weight = embed_tokens.weight  # tied

    def forward(self, prev, enc, enc_mask):
        x = math.sqrt(self.d) * self.embed_tokens(prev) + sinusoidal(prev, self.d, self.pad, self.embed_tokens.weight.dtype)
        self_mask = pad_mask(prev, self.pad)
        for l in self.layers:
            x = l(x, enc, self_mask, enc_mask)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.output_projection(x)


class EncoderDecoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        lc, d, pad = c["layer"], c["layer"]["d_model"], c["padding_idx"]
        src = nn.Embedding(c["src_vocab"], d, padding_idx=pad)
        tgt = src if c["share_embeddings"] else nn.Embedding(c["tgt_vocab"], d, padding_idx=pad)
        self.encoder = TransformerEncoder(lc, c["encoder_layers"], src)
        self.decoder = TransformerDecoder(lc, c["decoder_layers"], tgt)
        self.pad = pad

    def forward(self, src, prev):
        return self.decoder(prev, self.encoder(src), pad_mask(src, self.pad))


class _Holder(nn.Module):
    """An empty module to build dotted paths (cls.predictions ...)."""


class LearnedPositions(nn.Module):
    def __init__(self, n, d):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n, d))


class Bert(nn.Module):
    """HF BertForMaskedLM with moekd names: embeddings.*, encoder.layers.N.*, cls.predictions.*."""

    def __init__(self, c):
        super().__init__()
        d, eps = c["hidden_size"], c["layer_norm_eps"]
        lc = dict(d_model=d, num_heads=c["num_heads"], ffn_dim=c["intermediate_size"], activation="gelu",
                  pre_norm=False, ln_eps=eps, adapters=False)
        self.embeddings = _Holder()
        self.embeddings.word_embeddings = nn.Embedding(c["vocab_size"], d, padding_idx=c["pad_token_id"])
        self.embeddings.position_embeddings = LearnedPositions(c["max_position_embeddings"], d)
        self.embeddings.token_type_embeddings = nn.Embedding(c["type_vocab_size"], d)
        self.embeddings.LayerNorm = nn.LayerNorm(d, eps=eps)
        self.encoder = _Holder()
        self.encoder.layers = nn.ModuleList(EncoderLayer(lc) for _ in range(c["num_layers"]))
        self.cls = _Holder()
        self.cls.predictions = p = _Holder()
        p.transform = _Holder()
        p.transform.dense = nn.Linear(d, d)
        p.transform.LayerNorm = nn.LayerNorm(d, eps=eps)
        p.bias = nn.Parameter(torch.zeros(c["vocab_size"]))
        p.decoder = nn.Linear(d, c["vocab_size"])
        p.decoder.weight = self.embeddings.word_embeddings.weight  # tied, as HF
        p.decoder.bias = p.bias

    def forward(self, input_ids, token_type_ids, padding_mask):
        e = self.embeddings
        x = e.word_embeddings(input_ids) + e.token_type_embeddings(token_type_ids)
        x = e.LayerNorm(x + e.position_embeddings.weight[: input_ids.shape[1]])
        for l in self.encoder.layers:
            x = l(x, padding_mask)
        p = self.cls.predictions
        return p.decoder(p.transform.LayerNorm(F.gelu(p.transform.dense(x))))


class ViT(nn.Module):
    """HF ViTForImageClassification with moekd names; the patch embedding is a real Conv2d."""

    def __init__(self, c):
        super().__init__()
        d, eps, p = c["hidden_size"], c["layer_norm_eps"], c["patch_size"]
        n = (c["image_size"] // p) ** 2
        lc = dict(d_model=d, num_heads=c["num_heads"], ffn_dim=c["intermediate_size"], activation="gelu",
                  pre_norm=True, ln_eps=eps, adapters=False)
        self.embeddings = _Holder()
        self.embeddings.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.embeddings.patch_embeddings = _Holder()
        self.embeddings.patch_embeddings.projection = nn.Conv2d(c["num_channels"], d, kernel_size=p, stride=p)
        self.embeddings.position_embeddings = LearnedPositions(n + 1, d)
        self.encoder = _Holder()
        self.encoder.layers = nn.ModuleList(EncoderLayer(lc) for _ in range(c["num_layers"]))
        self.encoder.layer_norm = nn.LayerNorm(d, eps=eps)
        self.classifier = nn.Linear(d, c["num_classes"])

    def forward(self, images):
        e = self.embeddings
        x = e.patch_embeddings.projection(images).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([e.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + e.position_embeddings.weight
        for l in self.encoder.layers:
            x = l(x)
        return self.classifier(self.encoder.layer_norm(x)[:, 0])
