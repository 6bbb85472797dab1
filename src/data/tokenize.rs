//! Loading a BERT tokenizer and turning GLUE examples into token ids.
//!
//! Padding is always switched off and truncation reset to `max_len`, whatever
//! the model's files say: shipped `tokenizer.json` files often pad every row
//! to 128, which would defeat the dynamic padding in [`batch`](super::batch).

use std::path::{Path, PathBuf};

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, EncodeInput, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use super::glue::Example;
use crate::error::{Error, Result};

/// The three special tokens of a pair plus one token of text.
const MIN_MAX_LEN: usize = 4;
/// Examples per `encode_batch` call. Whole `Encoding`s (with offsets and token
/// strings) for MNLI's 393k pairs would take gigabytes; chunks keep only ids.
const ENCODE_CHUNK: usize = 4096;

/// Loads `model_dir/tokenizer.json`, or builds a BERT WordPiece tokenizer from
/// `model_dir/vocab.txt` (lowercasing per `tokenizer_config.json`'s
/// `do_lower_case`, default true), then sets truncation to `max_len` tokens
/// (longest sequence first, specials included) and no padding.
///
/// # Errors
/// [`Error::Config`] if `max_len < 4`; [`Error::Io`] if neither file exists or
/// one cannot be read; [`Error::Tokenizer`] if the tokenizer cannot be built or
/// a special token is missing from the vocabulary; [`Error::Parse`] /
/// [`Error::Field`] for a malformed `tokenizer_config.json`.
pub fn load_tokenizer(model_dir: &Path, max_len: usize) -> Result<Tokenizer> {
    if max_len < MIN_MAX_LEN {
        return Err(Error::Config(format!(
            "max_len must be at least {MIN_MAX_LEN}, got {max_len}"
        )));
    }
    let json = model_dir.join("tokenizer.json");
    let vocab = model_dir.join("vocab.txt");
    let (mut tok, source) = if json.is_file() {
        let tok = Tokenizer::from_file(&json).map_err(|e| tokenizer_error(&json, e))?;
        (tok, json)
    } else if vocab.is_file() {
        (bert_from_vocab(model_dir, &vocab)?, vocab)
    } else {
        let msg = format!(
            "neither tokenizer.json nor vocab.txt in `{}`",
            model_dir.display()
        );
        return Err(Error::io(
            json,
            std::io::Error::new(std::io::ErrorKind::NotFound, msg),
        ));
    };
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length: max_len,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: TruncationDirection::Right,
    }))
    .map_err(|e| tokenizer_error(&source, e))?;
    Ok(tok)
}

fn tokenizer_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// What `transformers`' `BertTokenizer` reads from `tokenizer_config.json`.
struct BertOptions {
    lowercase: bool,
    unk: String,
    cls: String,
    sep: String,
    /// Kept whole when they appear in text, like the other specials.
    others: Vec<String>,
}

impl BertOptions {
    fn read(model_dir: &Path) -> Result<BertOptions> {
        let path = model_dir.join("tokenizer_config.json");
        let mut opts = BertOptions {
            lowercase: true,
            unk: "[UNK]".into(),
            cls: "[CLS]".into(),
            sep: "[SEP]".into(),
            others: vec!["[PAD]".into(), "[MASK]".into()],
        };
        if !path.is_file() {
            return Ok(opts);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Parse {
            file: path.clone(),
            line: e.line(),
            // serde_json reports column 0 for an error at a line's end.
            column: e.column().max(1),
            msg: e.to_string(),
        })?;
        let field_error = |field: &str, msg: &str| Error::Field {
            file: path.clone(),
            field: field.into(),
            msg: msg.into(),
        };
        match config.get("do_lower_case") {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => {
                opts.lowercase = v
                    .as_bool()
                    .ok_or_else(|| field_error("do_lower_case", "expected true or false"))?
            }
        }
        // Newer configs store special tokens as `{"content": "[CLS]", ...}`.
        let token = |field: &str| -> Result<Option<String>> {
            match config.get(field) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_str()
                    .or_else(|| v.get("content").and_then(|c| c.as_str()))
                    .map(|s| Some(s.to_string()))
                    .ok_or_else(|| {
                        field_error(field, "expected a string or an object with `content`")
                    }),
            }
        };
        for (field, slot) in [
            ("unk_token", &mut opts.unk),
            ("cls_token", &mut opts.cls),
            ("sep_token", &mut opts.sep),
        ] {
            if let Some(t) = token(field)? {
                *slot = t;
            }
        }
        for (field, i) in [("pad_token", 0), ("mask_token", 1)] {
            if let Some(t) = token(field)? {
                opts.others[i] = t;
            }
        }
        Ok(opts)
    }
}

fn bert_from_vocab(model_dir: &Path, vocab_path: &Path) -> Result<Tokenizer> {
    let opts = BertOptions::read(model_dir)?;
    let bytes = std::fs::read(vocab_path).map_err(|e| Error::io(vocab_path, e))?;
    let vocab = WordPiece::read_bytes(&bytes).map_err(|e| tokenizer_error(vocab_path, e))?;
    let id = |token: &str| {
        vocab.get(token).copied().ok_or_else(|| {
            tokenizer_error(
                vocab_path,
                format!("special token `{token}` is not in the vocabulary"),
            )
        })
    };
    let (cls_id, sep_id) = (id(&opts.cls)?, id(&opts.sep)?);
    id(&opts.unk)?;
    let specials: Vec<AddedToken> = [&opts.unk, &opts.cls, &opts.sep]
        .into_iter()
        .chain(&opts.others)
        .filter(|t| vocab.contains_key(t.as_str()))
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    let model = WordPiece::builder()
        .vocab(vocab)
        .unk_token(opts.unk.clone())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| tokenizer_error(vocab_path, e))?;

    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, opts.lowercase)))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(
            (opts.sep, sep_id),
            (opts.cls, cls_id),
        )))
        .with_decoder(Some(WordPieceDecoder::default()));
    tok.add_special_tokens(&specials);
    Ok(tok)
}

/// One tokenized example, unpadded: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`
/// with type ids 0 for the first segment and 1 for the second.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub input_ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// [`Label::as_f32`](super::glue::Label::as_f32) of the example.
    pub label: f32,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// Tokenizes `examples` in order, sentence pairs as pairs. `tok` should come
/// from [`load_tokenizer`], which turns padding off.
///
/// # Errors
/// [`Error::Tokenizer`] if the tokenizer fails (e.g. its unknown token is not
/// in its vocabulary). The tokenizer does not know its file, so the error's
/// path reads `<tokenizer>`.
pub fn encode_examples(tok: &Tokenizer, examples: &[Example]) -> Result<Vec<Encoded>> {
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(ENCODE_CHUNK) {
        let inputs: Vec<EncodeInput> = chunk
            .iter()
            .map(|e| match &e.text_b {
                Some(b) => EncodeInput::Dual(e.text_a.as_str().into(), b.as_str().into()),
                None => EncodeInput::Single(e.text_a.as_str().into()),
            })
            .collect();
        let encodings = tok
            .encode_batch_fast(inputs, true)
            .map_err(|e| tokenizer_error(Path::new("<tokenizer>"), e))?;
        out.extend(encodings.iter().zip(chunk).map(|(enc, ex)| Encoded {
            input_ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
            label: ex.label.as_f32(),
        }));
    }
    Ok(out)
}

/// Writes `dir/vocab.txt` for tests: `[PAD]`=0, `[UNK]`=1, `[CLS]`=2,
/// `[SEP]`=3, `[MASK]`=4, then `words` from id 5 on (`##x` for subword pieces).
///
/// # Errors
/// [`Error::Io`] if the file cannot be written.
#[doc(hidden)]
pub fn write_test_vocab(dir: &Path, words: &[&str]) -> Result<PathBuf> {
    let path = dir.join("vocab.txt");
    let lines: Vec<&str> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .into_iter()
        .chain(words.iter().copied())
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::glue::Label;

    // Ids: the=5 cat=6 sat=7 on=8 mat=9 a=10 dog=11 ##s=12 .=13 big=14
    const WORDS: &[&str] = &[
        "the", "cat", "sat", "on", "mat", "a", "dog", "##s", ".", "big",
    ];

    fn test_tokenizer(max_len: usize) -> (tempfile::TempDir, Tokenizer) {
        let dir = tempfile::tempdir().unwrap();
        write_test_vocab(dir.path(), WORDS).unwrap();
        let tok = load_tokenizer(dir.path(), max_len).unwrap();
        (dir, tok)
    }

    fn example(a: &str, b: Option<&str>) -> Example {
        Example {
            text_a: a.into(),
            text_b: b.map(Into::into),
            label: Label::Class(1),
        }
    }

    #[test]
    fn single_sentences_get_cls_and_sep_and_subwords() {
        let (_dir, tok) = test_tokenizer(64);
        let enc = encode_examples(
            &tok,
            &[
                example("The cats sat on the mat.", None),
                example("the zebra [SEP] cat", None),
            ],
        )
        .unwrap();
        assert_eq!(enc[0].input_ids, [2, 5, 6, 12, 7, 8, 5, 9, 13, 3]);
        assert_eq!(enc[0].type_ids, [0; 10]);
        assert_eq!(enc[0].label, 1.0);
        // Unknown words map to [UNK]; a literal [SEP] stays one token.
        assert_eq!(enc[1].input_ids, [2, 5, 1, 3, 6, 3]);
    }

    #[test]
    fn pairs_get_type_ids_and_longest_first_truncation() {
        let (_dir, tok) = test_tokenizer(64);
        let enc = encode_examples(&tok, &[example("A dog.", Some("The cat sat."))]).unwrap();
        assert_eq!(enc[0].input_ids, [2, 10, 11, 13, 3, 5, 6, 7, 13, 3]);
        assert_eq!(enc[0].type_ids, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);

        let (_dir, tok) = test_tokenizer(8);
        let enc = encode_examples(
            &tok,
            &[example("the big big big big big dog", Some("a cat"))],
        )
        .unwrap();
        assert_eq!(enc[0].input_ids, [2, 5, 14, 14, 3, 10, 6, 3]);
        assert_eq!(enc[0].type_ids, [0, 0, 0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn truncation_keeps_the_final_sep() {
        let (_dir, tok) = test_tokenizer(6);
        let enc = encode_examples(
            &tok,
            &[
                example("the cat sat on the mat .", None),
                example("a", None),
            ],
        )
        .unwrap();
        assert_eq!(enc[0].input_ids, [2, 5, 6, 7, 8, 3]);
        assert_eq!(enc[1].input_ids, [2, 10, 3]);
    }

    #[test]
    fn do_lower_case_false_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        write_test_vocab(dir.path(), WORDS).unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"do_lower_case": false, "cls_token": {"content": "[CLS]"}}"#,
        )
        .unwrap();
        let tok = load_tokenizer(dir.path(), 16).unwrap();
        let enc = encode_examples(&tok, &[example("The cat", None)]).unwrap();
        assert_eq!(enc[0].input_ids, [2, 1, 6, 3]);
    }

    #[test]
    fn tokenizer_json_padding_and_truncation_are_overridden() {
        let (_dir, mut tok) = test_tokenizer(64);
        // Mimic a shipped tokenizer.json that pads everything to 128.
        tok.with_padding(Some(tokenizers::PaddingParams {
            strategy: tokenizers::PaddingStrategy::Fixed(128),
            ..Default::default()
        }));
        let shipped = tempfile::tempdir().unwrap();
        tok.save(shipped.path().join("tokenizer.json"), false)
            .unwrap();

        let loaded = load_tokenizer(shipped.path(), 5).unwrap();
        assert!(loaded.get_padding().is_none());
        let enc = encode_examples(
            &loaded,
            &[
                example("a dog", None),
                example("the cat sat on the mat", None),
            ],
        )
        .unwrap();
        assert_eq!(enc[0].input_ids, [2, 10, 11, 3]);
        assert_eq!(enc[1].input_ids, [2, 5, 6, 7, 3]);
    }

    #[test]
    fn bad_model_dirs_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_tokenizer(dir.path(), 16).unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(err.to_string().contains("vocab.txt"));

        assert!(matches!(
            load_tokenizer(dir.path(), 3),
            Err(Error::Config(_))
        ));

        std::fs::write(dir.path().join("vocab.txt"), "[PAD]\n[UNK]\nthe\n").unwrap();
        let err = load_tokenizer(dir.path(), 16).unwrap_err().to_string();
        assert!(err.contains("`[CLS]` is not in the vocabulary"), "{err}");

        write_test_vocab(dir.path(), WORDS).unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            "{\n  \"do_lower_case\": tru,\n}",
        )
        .unwrap();
        let err = load_tokenizer(dir.path(), 16).unwrap_err();
        assert!(matches!(err, Error::Parse { line: 2, .. }), "{err:?}");
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"do_lower_case": "yes"}"#,
        )
        .unwrap();
        assert!(
            matches!(load_tokenizer(dir.path(), 16), Err(Error::Field { field, .. }) if field == "do_lower_case")
        );

        std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
        assert!(matches!(
            load_tokenizer(dir.path(), 16),
            Err(Error::Tokenizer { .. })
        ));
    }

    /// The all-MiniLM-L6-v2 snapshot in the Hugging Face cache, if any.
    fn minilm_snapshot() -> Option<PathBuf> {
        let hf_home = std::env::var_os("HF_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/huggingface")
            });
        let snapshots =
            hf_home.join("hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots");
        let found = std::fs::read_dir(&snapshots)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("tokenizer.json").is_file());
        if found.is_none() {
            eprintln!(
                "skipping: no all-MiniLM-L6-v2 tokenizer.json under {}",
                snapshots.display()
            );
        }
        found
    }

    #[test]
    fn minilm_tokenizer_json_is_unpadded() {
        let Some(dir) = minilm_snapshot() else { return };
        let tok = load_tokenizer(&dir, 128).unwrap();
        let sentence = "it 's a charming and often affecting journey . ";
        let enc = encode_examples(&tok, &[example(sentence, None)]).unwrap();
        // [CLS] it ' s a charming and often affecting journey . [SEP]
        assert_eq!(enc[0].input_ids.len(), 12, "{:?}", enc[0].input_ids);
        assert_eq!((enc[0].input_ids[0], enc[0].input_ids[11]), (101, 102));
        assert!(!enc[0].input_ids.contains(&0));
    }

    /// The vocab.txt path must tokenize exactly like the shipped tokenizer.json.
    #[test]
    fn vocab_txt_matches_tokenizer_json_on_real_glue() {
        let Some(snapshot) = minilm_snapshot() else {
            return;
        };
        let Some(glue) = crate::data::test_support::glue_dir_or_skip(
            "vocab_txt_matches_tokenizer_json_on_real_glue",
        ) else {
            return;
        };
        let vocab_only = tempfile::tempdir().unwrap();
        for file in ["vocab.txt", "tokenizer_config.json"] {
            std::fs::copy(snapshot.join(file), vocab_only.path().join(file)).unwrap();
        }
        let from_json = load_tokenizer(&snapshot, 64).unwrap();
        let from_vocab = load_tokenizer(vocab_only.path(), 64).unwrap();
        for (task, split) in [
            (crate::data::Task::Sst2, "dev"),
            (crate::data::Task::Rte, "dev"),
            (crate::data::Task::Cola, "dev"),
        ] {
            let examples = crate::data::read_split(&glue, task, split).unwrap();
            let a = encode_examples(&from_json, &examples).unwrap();
            let b = encode_examples(&from_vocab, &examples).unwrap();
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert_eq!(x, y, "{task} {split} row {i}: {:?}", examples[i]);
            }
            assert!(a.iter().all(|e| e.len() <= 64));
            if task == crate::data::Task::Rte {
                assert!(
                    a.iter().any(|e| e.len() == 64),
                    "RTE pairs should hit the truncation limit"
                );
            }
        }
    }
}
