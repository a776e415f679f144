// File: agents/gguf/gguf_tokenizer.h
// -----------------------------------------------------------------------------
// The tokenizer of a GGUF file, from its `tokenizer.ggml.*` metadata, as the
// Hugging Face tokenizer.json that agents/tokenizer loads (so a GGUF model
// tokenizes with the same, tested BPE / normalizer / decoder code as an HF
// directory). Torch-free.
//
// tokenizer.ggml.model:
//   "llama" (SentencePiece; Llama 1/2, Mistral, TinyLlama): `tokens`,
//     `scores`, `token_type` (1 normal, 2 unknown, 3 control, 4 user-defined,
//     5 unused, 6 byte), bos/eos/unk ids, add_bos_token (default true),
//     add_space_prefix (default true). Written as HF's LlamaConverter does:
//     a BPE with byte_fallback whose merges are every split of a piece into
//     two pieces, ordered by the merged piece's score (highest first; ties in
//     id order); normalizer Prepend "▁" (with add_space_prefix) + Replace " "
//     -> "▁"; decoder Replace "▁" -> " ", ByteFallback, Fuse, Strip one
//     leading space; control and unknown tokens are special added tokens,
//     user-defined ones non-special added tokens; a TemplateProcessing that
//     prepends BOS when add_bos_token.
//   "gpt2" (byte-level BPE; Llama 3, Qwen2, SmolLM, GPT-2): `tokens`,
//     `merges`, `token_type`, bos/eos ids, add_bos_token (default false),
//     and the pre-tokenizer regex named by tokenizer.ggml.pre: "default" /
//     "gpt2" / "smollm" (GPT-2's), "llama-bpe" / "llama3" (Llama 3's),
//     "qwen2" (Qwen2's); other names are rejected.
//   absent or "none": no tokenizer (the model runs on token ids).
//   Anything else (e.g. "bert", "t5", "rwkv"): InvalidArgument.
//
// Thread safety: pure function.
#ifndef QKVSHARE_AGENTS_GGUF_GGUF_TOKENIZER_H_
#define QKVSHARE_AGENTS_GGUF_GGUF_TOKENIZER_H_

#include <string>

#include "absl/status/statusor.h"
#include "agents/gguf/gguf_file.h"

namespace qkvshare::agents::gguf {

// The tokenizer.json text of `file`'s tokenizer, "" when it has none.
// Errors: InvalidArgument naming the file and key (missing tokens, arrays
// of different lengths, an id out of range, an unsupported model or
// pre-tokenizer).
absl::StatusOr<std::string> TokenizerJsonFromGguf(const GgufFile& file);

}  // namespace qkvshare::agents::gguf

#endif  // QKVSHARE_AGENTS_GGUF_GGUF_TOKENIZER_H_
