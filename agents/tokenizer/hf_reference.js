// Reference ids and texts from the Hugging Face tokenizers library (its Node
// binding, npm `tokenizers`, the Rust implementation) for a deterministic
// corpus, for tokenizer_crosscheck (see docs/tokenizer.md, "Cross-check").
//
//   npm install tokenizers@0.23.2          (in some scratch directory)
//   NODE_PATH=<scratch>/node_modules node agents/tokenizer/hf_reference.js \
//       path/to/tokenizer.json > /tmp/reference.json
//
// Output: {"tokenizer": path, "cases": [{"text", "ids", "ids_plain",
// "decoded", "decoded_all"}], "decode_cases": [{"ids", "skip", "text"}]}
// where ids = encode(text) with special tokens, ids_plain without,
// decoded = decode(ids, skip_special_tokens=true), decoded_all = decode(ids,
// false); decode_cases are random id sequences.
'use strict';
const fs = require('fs');
const {Tokenizer} = require('tokenizers');

// Small deterministic PRNG (mulberry32).
function rng(seed) {
  return function() {
    seed |= 0;
    seed = (seed + 0x6D2B79F5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FIXED = [
  '', ' ', '  ', '\n', '\t', 'Once upon a time', '  leading and trailing  ',
  'Hello world! How are you?', "I'M sure it's fine, don't you think? WE'LL SEE. they'd've",
  'Numbers: 1 12 123 1234 12345 1234567 3.14159 -42 1,000,000 2024-06-01',
  'def f(x):\n    return x**2  # square\n\n\tprint(f(3))\r\n',
  'caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m stra\u00dfe',
  'e\u0301 decomposed vs \u00e9 composed; A\u030a vs \u00c5; \u1e9b\u0323',
  '\u4e2d\u6587\u6d4b\u8bd5\uff0c\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002\ud55c\uad6d\uc5b4',
  '\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0939\u093f\u0928\u094d\u0926\u0940 \u0e44\u0e17\u0e22',
  'emoji \ud83c\udf89\ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67 \ud83c\uddeb\ud83c\uddf7 \u2615\ufe0f!',
  '<s>inline special</s> and <unk> text', '<|begin_of_text|>Hi<|eot_id|>',
  '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n',
  '<|endoftext|><|endoftext|>x', 'a<|im_start|b', 'multiple   spaces\t\ttabs\n\n\nnewlines',
  'Max said, "Zo\u00eb, look at the caf\u00e9!"', '\u00a0non-breaking\u2003em-space\u3000ideographic',
  'URL: https://example.com/path?q=1&r=two#frag', 'mixedCASE camelCase snake_case kebab-case',
];

// Random strings from a mixed alphabet.
const ALPHABET = [
  ...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789',
  ...' \t\n\r.,;:!?\'"()[]{}<>-_=+*/\\|@#$%^&~`', ' ', ' ', ' ', ' ',
  '\u00e9', '\u00fc', '\u00df', '\u0301', '\u0308', '\u4e2d', '\u6587', '\u3002', '\u30c6',
  '\ud55c', '\u0627', '\u0939', '\u094d', '\ud83c\udf89', '\ud83d\ude00', '\u200d', '\u2581',
  '\u00a0', '\u2003', '\uff01', "'s", "'T", '<s>', '</s>', '<|im_end|>', '<|eot_id|>',
];

async function main() {
  const path = process.argv[2];
  const tok = Tokenizer.fromFile(path);
  const next = rng(20240601);
  const texts = [...FIXED];
  const stories = process.argv[3] ? JSON.parse(fs.readFileSync(process.argv[3], 'utf8')) : null;
  if (stories) for (const c of stories.cases) texts.push(c.text);
  for (let i = 0; i < 400; ++i) {
    const n = Math.floor(next() * 80);
    let s = '';
    for (let j = 0; j < n; ++j) s += ALPHABET[Math.floor(next() * ALPHABET.length)];
    texts.push(s);
  }
  const cases = [];
  for (const text of texts) {
    const ids = (await tok.encode(text, null, {addSpecialTokens: true})).getIds();
    const idsPlain = (await tok.encode(text, null, {addSpecialTokens: false})).getIds();
    cases.push({
      text, ids, ids_plain: idsPlain,
      decoded: await tok.decode(ids, true), decoded_all: await tok.decode(ids, false),
    });
  }
  // Random id sequences (vocab ids, biased to low ids where byte pieces live).
  const vocab = tok.getVocabSize(true);
  const decodeCases = [];
  for (let i = 0; i < 200; ++i) {
    const ids = [];
    const n = Math.floor(next() * 30);
    for (let j = 0; j < n; ++j) {
      ids.push(next() < 0.5 ? Math.floor(next() * 300) : Math.floor(next() * vocab));
    }
    const skip = i % 2 === 0;
    decodeCases.push({ids, skip, text: await tok.decode(ids, skip)});
  }
  process.stdout.write(JSON.stringify({tokenizer: path, cases, decode_cases: decodeCases}));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
