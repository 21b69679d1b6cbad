"""The peers, run in the peer venv (see peers.py): Hugging Face MarianMTModel and CTranslate2.

nmt's benchmark scripts drive this file through `peers.PeerWorker`: each request names one
method of `MarianPeer` and its keyword arguments; each method times its own work, so the pipe
between the processes costs nothing. The model is a `MarianMTModel` built from a `MarianConfig`
with random weights (no download); CTranslate2 loads a conversion of that same model.

Ids follow nmt's tokenizer (PAD 0, UNK 1, BOS 2, EOS 3), so every system reads the same
tokens. Source rows arrive as id lists that already end in EOS. One difference is kept from
Marian's own layout (that of every OPUS-MT model): its PAD is an extra last entry, id V, which
CTranslate2's Marian converter removes again (it always drops the last vocabulary row). So
the HF model has V + 1 output rows, CTranslate2 V, nmt V; nmt's PAD id 0 is mapped to V here.

On a GPU (`build(device="cuda")`) the model's weights take the dtype asked for (bf16 for
decoding, as nmt's), training runs under bf16 autocast with float32 weights (as nmt's trainer),
and CTranslate2 runs on the GPU in the compute type asked for (float16, bfloat16). Every
timing waits for the GPU to finish.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch
from peers import serve

PAD_ID, UNK_ID, EOS_ID = 0, 1, 3  # nmt's
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _pad(rows: list[list[int]], pad_id: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock read after it counts all of it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class MarianPeer:
    def __init__(self) -> None:
        self.model = None
        self.pad_id = -1  # Marian's PAD: the vocabulary size of nmt's tokenizer
        self.translators: dict[str, object] = {}
        self.hf_batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.ct2_batches: list[list[list[str]]] = []
        self.train_batches: list[dict] = []
        self.optimizer = None
        self.device = torch.device("cpu")
        self.autocast_dtype: torch.dtype | None = None

    # ------------------------------------------------------------------ setup

    def versions(self) -> dict:
        """Versions of the peers; a CTranslate2 that cannot be imported is None (HF alone)."""
        import sentencepiece
        import transformers

        try:
            import ctranslate2

            ct2_version = ctranslate2.__version__
        except ImportError:
            ct2_version = None
        return {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "ctranslate2": ct2_version,
            "sentencepiece": sentencepiece.__version__,
            "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        }

    def build(
        self,
        *,
        d_model: int,
        heads: int,
        encoder_layers: int,
        decoder_layers: int,
        ffn_dim: int,
        vocab_size: int,
        dropout: float,
        seed: int,
        threads: int,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> dict:
        """A random-weight MarianMTModel of these sizes (ReLU, shared and tied embeddings),
        with vocab_size + 1 entries: Marian's PAD comes last (see the module docstring);
        on `device`, its weights in `dtype` (float32 for training, which autocasts on a GPU)."""
        from transformers import MarianConfig, MarianMTModel

        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.pad_id = vocab_size
        config = MarianConfig(
            vocab_size=vocab_size + 1,
            d_model=d_model,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
            encoder_attention_heads=heads,
            decoder_attention_heads=heads,
            encoder_ffn_dim=ffn_dim,
            decoder_ffn_dim=ffn_dim,
            activation_function="relu",
            dropout=dropout,
            attention_dropout=0.0,
            activation_dropout=0.0,
            max_position_embeddings=512,
            scale_embedding=True,
            share_encoder_decoder_embeddings=True,
            tie_word_embeddings=True,
            pad_token_id=self.pad_id,
            eos_token_id=EOS_ID,
            decoder_start_token_id=self.pad_id,  # Marian starts the decoder from PAD
            forced_eos_token_id=None,
        )
        self.model = MarianMTModel(config).eval()
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype]
        self.model.to(self.device, self.dtype)
        self.translators.clear()
        return {
            # Trainable ones: Marian's sinusoidal position tables are frozen parameters.
            "parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "attn_implementation": getattr(config, "_attn_implementation", None),
        }

    def export_ct2(self, *, spm_model: str, work_dir: str) -> dict:
        """Save the model with a MarianTokenizer over `spm_model`, convert it for CTranslate2.

        TransformersConverter reads the tokenizer beside the model for the vocabulary.
        """
        import ctranslate2
        import sentencepiece as spm
        from transformers import MarianTokenizer

        work = Path(work_dir)
        hf_dir, ct2_dir = work / "hf", work / "ct2"
        hf_dir.mkdir(parents=True, exist_ok=True)
        processor = spm.SentencePieceProcessor(model_file=spm_model)
        # nmt's PAD (id 0, never in an input) is renamed so that "<pad>" can be Marian's id V.
        vocab = {processor.id_to_piece(i): i for i in range(1, processor.get_piece_size())}
        vocab["<nmt-pad>"] = PAD_ID
        vocab["<pad>"] = self.pad_id
        (work / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        tokenizer = MarianTokenizer(
            source_spm=spm_model,
            target_spm=spm_model,
            vocab=str(work / "vocab.json"),
            unk_token=processor.id_to_piece(UNK_ID),
            eos_token=processor.id_to_piece(EOS_ID),
            pad_token="<pad>",
        )
        tokenizer.save_pretrained(hf_dir)
        # Saved from a float32 copy on the CPU, which the converter reads; on a GPU these are
        # HF's own bf16 weights widened, so that both peers run the same model.
        try:
            self.model.to("cpu", torch.float32).save_pretrained(hf_dir)
        finally:  # back where HF's timed runs expect it, whatever happened
            self.model.to(self.device, self.dtype)
        converter = ctranslate2.converters.TransformersConverter(str(hf_dir))
        converter.convert(str(ct2_dir), force=True)
        self.ct2_dir = ct2_dir
        self.pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
        self.translators.clear()
        return {"ct2_dir": str(ct2_dir)}

    def set_inputs(self, *, batches: list[list[list[int]]]) -> dict:
        """The decoding batches: id lists ending in EOS; CTranslate2 reads them as pieces."""
        self.hf_batches = []
        for rows in batches:
            ids = _pad(rows, self.pad_id)
            mask = ids.ne(self.pad_id).long()
            self.hf_batches.append((ids.to(self.device), mask.to(self.device)))
        pieces = getattr(self, "pieces", None)
        self.ct2_batches = (
            [[[pieces[i] for i in row] for row in rows] for rows in batches] if pieces else []
        )
        return {"batches": len(batches)}

    # ------------------------------------------------------------------ decoding

    def hf_decode(self, *, beam: int, length: int, limit: int = 0, count_steps: bool = False):
        """generate() over the batches with exactly `length` new tokens per sentence.

        Returns seconds, the output lengths (new tokens, start token excluded) and, with
        count_steps, the decoder forward calls per batch (a hook; off while timing).
        """
        steps: list[int] = []
        hook = None
        if count_steps:
            hook = self.model.get_decoder().register_forward_pre_hook(
                lambda module, args: steps.__setitem__(-1, steps[-1] + 1)
            )
        lengths = []
        batches = self.hf_batches[:limit] if limit else self.hf_batches
        _sync(self.device)
        started = time.perf_counter()
        with torch.inference_mode():
            for ids, mask in batches:
                steps.append(0)
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    num_beams=beam,
                    do_sample=False,
                    min_new_tokens=length,
                    max_new_tokens=length,
                    use_cache=True,
                    length_penalty=1.0,
                )
                lengths.extend([out.shape[1] - 1] * out.shape[0])
        _sync(self.device)
        seconds = time.perf_counter() - started
        if hook is not None:
            hook.remove()
        return {"seconds": seconds, "lengths": lengths, "steps": steps if count_steps else None}

    def ct2_load(self, *, compute_type: str, threads: int) -> dict:
        """Load the converted model for `compute_type` on the model's device (CPU or GPU).

        Raises where this CTranslate2 cannot, e.g. a build whose CUDA libraries the machine
        lacks: the caller then leaves CTranslate2 out and records why.
        """
        import ctranslate2

        if compute_type not in self.translators:
            translator = ctranslate2.Translator(
                str(self.ct2_dir),
                device=self.device.type,
                device_index=self.device.index or 0,
                compute_type=compute_type,
                intra_threads=threads,
                inter_threads=1,
            )
            # One short translation: a GPU library that loads only at the first product
            # (cuBLAS) fails here, not in the middle of a timed run.
            translator.translate_batch([[self.pieces[EOS_ID]]], max_decoding_length=2)
            self.translators[compute_type] = translator
        return {"device": self.device.type, "compute_type": compute_type}

    def ct2_decode(self, *, compute_type: str, beam: int, length: int, threads: int, limit=0):
        """translate_batch per batch (the same batches, not re-sorted), `length` tokens each.

        translate_batch returns finished results on the host, so the clock counts the GPU's
        work too."""
        self.ct2_load(compute_type=compute_type, threads=threads)
        translator = self.translators[compute_type]
        lengths = []
        batches = self.ct2_batches[:limit] if limit else self.ct2_batches
        started = time.perf_counter()
        for tokens in batches:
            results = translator.translate_batch(
                tokens,
                beam_size=beam,
                num_hypotheses=1,
                min_decoding_length=length,
                max_decoding_length=length,
                length_penalty=1.0,
                max_batch_size=0,
            )
            lengths.extend(len(r.hypotheses[0]) for r in results)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "lengths": lengths}

    # ------------------------------------------------------------------ training

    def train_setup(self, *, batches: list[dict], lr: float, autocast: str | None = None) -> dict:
        """Batches of {"src", "tgt_in", "tgt_out"} (padded id rows, as nmt's collate makes
        them); PAD labels become -100, which Marian's loss ignores. `autocast` (a dtype name,
        GPU only): updates run under torch.autocast in it, as nmt's trainer does on a GPU."""
        self.autocast_dtype = DTYPES[autocast] if autocast else None
        self.train_batches = []
        for b in batches:
            src, tgt_in, tgt_out = (torch.tensor(b[k]) for k in ("src", "tgt_in", "tgt_out"))
            batch = {
                "input_ids": src.masked_fill(src.eq(PAD_ID), self.pad_id),
                "attention_mask": src.ne(PAD_ID).long(),
                "decoder_input_ids": tgt_in.masked_fill(tgt_in.eq(PAD_ID), self.pad_id),
                "labels": tgt_out.masked_fill(tgt_out.eq(PAD_ID), -100),
            }
            self.train_batches.append({k: v.to(self.device) for k, v in batch.items()})
        self.model.train()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=lr,
            betas=(0.9, 0.98),
            eps=1e-9,
            weight_decay=0.0,
            # Fused on a GPU, as nmt's there (torch's fastest AdamW); the CPU keeps the default.
            fused=True if self.device.type == "cuda" else None,
        )
        return {"batches": len(self.train_batches)}

    def hf_train(self, *, first: int, count: int, clip_norm: float) -> dict:
        """`count` updates (forward with labels -> loss, backward, clip, AdamW step) on the
        batches from `first` on; returns seconds and the mean loss."""
        losses = []
        amp = torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        _sync(self.device)
        started = time.perf_counter()
        for batch in self.train_batches[first : first + count]:
            self.optimizer.zero_grad(set_to_none=True)
            with amp:
                loss = self.model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip_norm)
            self.optimizer.step()
            losses.append(loss.detach())
        _sync(self.device)
        seconds = time.perf_counter() - started
        return {
            "seconds": seconds,
            "loss": torch.stack(losses).mean().item(),
            "peak_rss_mb": _peak_rss_mb(),
            "peak_cuda_mb": torch.cuda.max_memory_allocated(self.device) / 2**20
            if self.device.type == "cuda"
            else None,
        }


def main() -> None:
    peer = MarianPeer()
    handlers = {
        name: getattr(peer, name)
        for name in dir(peer)
        if not name.startswith("_") and callable(getattr(peer, name))
    }
    serve(handlers)


if __name__ == "__main__":
    main()
