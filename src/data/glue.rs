//! GLUE task metadata and the TSV readers.
//!
//! The files are read as GLUE ships them, which is *not* CSV: fields are split
//! on tabs with no quote handling (several sentences start with an unbalanced
//! `"`), MRPC starts with a UTF-8 BOM, CoLA has no header and its dev file no
//! final newline. Columns are found by header name where a header exists,
//! because MNLI and STS-B copies differ in how many metadata columns they keep;
//! the official position is the fallback.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A GLUE task. MNLI appears twice because its matched and mismatched dev
/// sets are evaluated separately; both read the same training file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    Cola,
    Sst2,
    Mrpc,
    Stsb,
    Qqp,
    MnliMatched,
    MnliMismatched,
    Qnli,
    Rte,
    Wnli,
}

/// Accepted spellings for [`Task::from_name`], compared case-insensitively.
const NAMES: &[(&str, Task)] = &[
    ("cola", Task::Cola),
    ("sst2", Task::Sst2),
    ("sst-2", Task::Sst2),
    ("mrpc", Task::Mrpc),
    ("stsb", Task::Stsb),
    ("sts-b", Task::Stsb),
    ("qqp", Task::Qqp),
    ("mnli", Task::MnliMatched),
    ("mnli-m", Task::MnliMatched),
    ("mnli-mm", Task::MnliMismatched),
    ("qnli", Task::Qnli),
    ("rte", Task::Rte),
    ("wnli", Task::Wnli),
];

const BINARY: &[&str] = &["0", "1"];
/// The order of BERT's `run_classifier.py` and of the `transformers` GLUE
/// processors. The Hugging Face `datasets` copy of MNLI orders them
/// entailment, neutral, contradiction instead, so a classifier head trained
/// on that copy needs its rows permuted before it matches these ids.
const MNLI_LABELS: &[&str] = &["contradiction", "entailment", "neutral"];
const ENTAILMENT: &[&str] = &["entailment", "not_entailment"];

impl Task {
    pub const ALL: [Task; 10] = [
        Task::Cola,
        Task::Sst2,
        Task::Mrpc,
        Task::Stsb,
        Task::Qqp,
        Task::MnliMatched,
        Task::MnliMismatched,
        Task::Qnli,
        Task::Rte,
        Task::Wnli,
    ];

    /// Parses a task name such as `sst2`, `SST-2`, `mnli-mm`.
    ///
    /// # Errors
    /// [`Error::Config`] listing the accepted names.
    pub fn from_name(name: &str) -> Result<Task> {
        let wanted = name.trim().to_ascii_lowercase();
        NAMES
            .iter()
            .find(|(n, _)| *n == wanted)
            .map(|&(_, task)| task)
            .ok_or_else(|| {
                let valid: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                Error::Config(format!(
                    "unknown GLUE task `{name}`; expected one of: {}",
                    valid.join(", ")
                ))
            })
    }

    /// Canonical lowercase name; [`Task::from_name`] accepts it back.
    /// Matched MNLI is plain `mnli`, as in `transformers`' `run_glue`.
    pub fn name(self) -> &'static str {
        match self {
            Task::Cola => "cola",
            Task::Sst2 => "sst2",
            Task::Mrpc => "mrpc",
            Task::Stsb => "stsb",
            Task::Qqp => "qqp",
            Task::MnliMatched => "mnli",
            Task::MnliMismatched => "mnli-mm",
            Task::Qnli => "qnli",
            Task::Rte => "rte",
            Task::Wnli => "wnli",
        }
    }

    /// The task's folder in the GLUE download (`glue_data/SST-2`, ...).
    pub fn dir_name(self) -> &'static str {
        match self {
            Task::Cola => "CoLA",
            Task::Sst2 => "SST-2",
            Task::Mrpc => "MRPC",
            Task::Stsb => "STS-B",
            Task::Qqp => "QQP",
            Task::MnliMatched | Task::MnliMismatched => "MNLI",
            Task::Qnli => "QNLI",
            Task::Rte => "RTE",
            Task::Wnli => "WNLI",
        }
    }

    /// Width of the classifier head; 1 for STS-B, which is a regression.
    pub fn num_labels(self) -> usize {
        match self {
            Task::Stsb => 1,
            Task::MnliMatched | Task::MnliMismatched => 3,
            _ => 2,
        }
    }

    pub fn is_regression(self) -> bool {
        self == Task::Stsb
    }

    /// Label strings in class-id order (`label_names()[id]`); empty for STS-B.
    pub fn label_names(self) -> &'static [&'static str] {
        match self.layout().labels {
            LabelKind::Names(names) => names,
            LabelKind::Score => &[],
        }
    }

    /// The metrics reported for this task, as keys of
    /// [`metrics::compute`](super::metrics::compute).
    pub fn metric_names(self) -> &'static [&'static str] {
        match self {
            Task::Cola => &["matthews_corr", "accuracy"],
            Task::Mrpc | Task::Qqp => &["accuracy", "f1"],
            Task::Stsb => &["pearson", "spearman"],
            _ => &["accuracy"],
        }
    }

    /// The metric used for model selection (the GLUE leaderboard's first one).
    pub fn main_metric(self) -> &'static str {
        match self {
            Task::Cola => "matthews_corr",
            Task::Mrpc | Task::Qqp => "f1",
            Task::Stsb => "pearson",
            _ => "accuracy",
        }
    }

    /// File name of a split: `train` → `train.tsv`, `dev` → `dev.tsv`
    /// (`dev_matched.tsv` / `dev_mismatched.tsv` for MNLI, likewise `test`);
    /// any other split `s` → `s.tsv`.
    pub fn split_file(self, split: &str) -> String {
        let suffix = match self {
            Task::MnliMatched => "_matched",
            Task::MnliMismatched => "_mismatched",
            _ => "",
        };
        match split {
            "dev" | "test" => format!("{split}{suffix}.tsv"),
            _ => format!("{split}.tsv"),
        }
    }

    fn layout(self) -> Layout {
        use Fallback::{Index, Last};
        let col = |header, fallback| Column { header, fallback };
        match self {
            Task::Cola => Layout {
                has_header: false,
                text_a: col("", Index(3)),
                text_b: None,
                label: col("", Index(1)),
                labels: LabelKind::Names(BINARY),
            },
            Task::Sst2 => Layout {
                has_header: true,
                text_a: col("sentence", Index(0)),
                text_b: None,
                label: col("label", Index(1)),
                labels: LabelKind::Names(BINARY),
            },
            Task::Mrpc => Layout {
                has_header: true,
                text_a: col("#1 String", Index(3)),
                text_b: Some(col("#2 String", Index(4))),
                label: col("Quality", Index(0)),
                labels: LabelKind::Names(BINARY),
            },
            Task::Stsb => Layout {
                has_header: true,
                text_a: col("sentence1", Index(7)),
                text_b: Some(col("sentence2", Index(8))),
                label: col("score", Last),
                labels: LabelKind::Score,
            },
            Task::Qqp => Layout {
                has_header: true,
                text_a: col("question1", Index(3)),
                text_b: Some(col("question2", Index(4))),
                label: col("is_duplicate", Index(5)),
                labels: LabelKind::Names(BINARY),
            },
            Task::MnliMatched | Task::MnliMismatched => Layout {
                has_header: true,
                text_a: col("sentence1", Index(8)),
                text_b: Some(col("sentence2", Index(9))),
                label: col("gold_label", Last),
                labels: LabelKind::Names(MNLI_LABELS),
            },
            Task::Qnli => Layout {
                has_header: true,
                text_a: col("question", Index(1)),
                text_b: Some(col("sentence", Index(2))),
                label: col("label", Index(3)),
                labels: LabelKind::Names(ENTAILMENT),
            },
            Task::Rte | Task::Wnli => Layout {
                has_header: true,
                text_a: col("sentence1", Index(1)),
                text_b: Some(col("sentence2", Index(2))),
                label: col("label", Index(3)),
                labels: LabelKind::Names(if self == Task::Rte {
                    ENTAILMENT
                } else {
                    BINARY
                }),
            },
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Task {
    type Err = Error;

    fn from_str(s: &str) -> Result<Task> {
        Task::from_name(s)
    }
}

// By name, so configs say `task: sst2` rather than `task: Sst2`.
impl serde::Serialize for Task {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Task {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Task, D::Error> {
        let name = String::deserialize(d)?;
        Task::from_name(&name).map_err(serde::de::Error::custom)
    }
}

/// A gold label: a class id for classification, a 0–5 similarity for STS-B.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Label {
    Class(usize),
    Score(f32),
}

impl Label {
    /// The form the trainer and the metrics take (class ids become `0.0`, `1.0`, ...).
    pub fn as_f32(self) -> f32 {
        match self {
            Label::Class(c) => c as f32,
            Label::Score(s) => s,
        }
    }
}

/// One labelled row; `text_b` is set for sentence-pair tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text_a: String,
    pub text_b: Option<String>,
    pub label: Label,
}

struct Layout {
    has_header: bool,
    text_a: Column,
    text_b: Option<Column>,
    label: Column,
    labels: LabelKind,
}

#[derive(Clone, Copy)]
struct Column {
    /// Header name to look for (CoLA's are empty: it has no header).
    header: &'static str,
    fallback: Fallback,
}

#[derive(Clone, Copy)]
enum Fallback {
    Index(usize),
    /// The last field of each row (MNLI's `gold_label`, STS-B's `score`),
    /// whose position depends on how many annotator columns a copy kept.
    Last,
}

enum LabelKind {
    Names(&'static [&'static str]),
    Score,
}

/// Finds the file for `split` under `data_dir`, which may be the GLUE root
/// (`data_dir/SST-2/train.tsv`) or the task's own folder (`data_dir/train.tsv`).
///
/// # Errors
/// [`Error::Io`] with kind `NotFound` naming both paths tried.
pub fn resolve_split_path(data_dir: &Path, task: Task, split: &str) -> Result<PathBuf> {
    let file = task.split_file(split);
    let in_root = data_dir.join(task.dir_name()).join(&file);
    let in_task_dir = data_dir.join(&file);
    if in_root.is_file() {
        return Ok(in_root);
    }
    if in_task_dir.is_file() {
        return Ok(in_task_dir);
    }
    let msg = format!(
        "no {} {split} file here nor at `{}` (pass the GLUE root or the {} folder)",
        task.dir_name(),
        in_task_dir.display(),
        task.dir_name()
    );
    Err(Error::io(
        in_root,
        std::io::Error::new(std::io::ErrorKind::NotFound, msg),
    ))
}

/// Reads one split of a task; see [`resolve_split_path`] and [`read_tsv`].
///
/// # Errors
/// As [`resolve_split_path`] and [`read_tsv`].
pub fn read_split(data_dir: &Path, task: Task, split: &str) -> Result<Vec<Example>> {
    read_tsv(&resolve_split_path(data_dir, task, split)?, task)
}

/// Reads a GLUE TSV in `task`'s layout. The first line of every task but
/// CoLA is taken as the header, whatever it holds.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Parse`] (1-based line,
/// 1-based field as the column) for invalid UTF-8, a row with too few fields,
/// an unknown label, a score that is not a number in 0..=5, or a file
/// without data rows.
pub fn read_tsv(path: &Path, task: Task) -> Result<Vec<Example>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = decode_utf8(path, bytes)?;
    parse_tsv(path, &text, task)
}

fn decode_utf8(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        Error::Parse {
            file: path.to_path_buf(),
            line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
            column: valid[line_start..].iter().filter(|&&b| b == b'\t').count() + 1,
            msg: "invalid UTF-8".into(),
        }
    })
}

fn parse_tsv(path: &Path, text: &str, task: Task) -> Result<Vec<Example>> {
    let parse_err = |line: usize, column: usize, msg: String| Error::Parse {
        file: path.to_path_buf(),
        line,
        column,
        msg,
    };
    let layout = task.layout();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    while lines.last() == Some(&"") {
        lines.pop();
    }
    let (columns, first_row) = match (layout.has_header, lines.first()) {
        (false, _) => (Columns::resolve(&layout, &[]), 0),
        (true, Some(header)) => {
            let names: Vec<&str> = header.split('\t').map(str::trim).collect();
            (Columns::resolve(&layout, &names), 1)
        }
        (true, None) => {
            let msg = format!("empty file: expected a {} header", task.dir_name());
            return Err(parse_err(1, 1, msg));
        }
    };

    let mut examples = Vec::with_capacity(lines.len().saturating_sub(first_row));
    for (i, raw) in lines.iter().enumerate().skip(first_row) {
        let line = i + 1;
        let fields: Vec<&str> = raw.split('\t').collect();
        if fields.len() < columns.min_fields {
            let msg = format!(
                "expected at least {} tab-separated fields for {}, found {}",
                columns.min_fields,
                task.dir_name(),
                fields.len()
            );
            return Err(parse_err(line, fields.len() + 1, msg));
        }
        let (label_index, label) = columns.label.pick(&fields);
        let label = parse_label(&layout.labels, label.trim())
            .map_err(|msg| parse_err(line, label_index + 1, msg))?;
        examples.push(Example {
            text_a: columns.text_a.pick(&fields).1.to_string(),
            text_b: columns.text_b.map(|c| c.pick(&fields).1.to_string()),
            label,
        });
    }
    if examples.is_empty() {
        return Err(parse_err(lines.len() + 1, 1, "no data rows".into()));
    }
    Ok(examples)
}

/// Where a task's fields sit in one particular file.
struct Columns {
    text_a: Fallback,
    text_b: Option<Fallback>,
    label: Fallback,
    min_fields: usize,
}

impl Columns {
    fn resolve(layout: &Layout, header: &[&str]) -> Columns {
        let locate = |c: Column| match header.iter().position(|h| *h == c.header) {
            Some(i) => Fallback::Index(i),
            None => c.fallback,
        };
        let (text_a, text_b, label) = (
            locate(layout.text_a),
            layout.text_b.map(locate),
            locate(layout.label),
        );
        let fixed = [Some(text_a), text_b, Some(label)]
            .into_iter()
            .flatten()
            .filter_map(|f| match f {
                Fallback::Index(i) => Some(i + 1),
                Fallback::Last => None,
            })
            .max()
            .unwrap_or(0);
        // `Last` must be a column of its own, not one of the text columns.
        let min_fields = fixed + usize::from(matches!(label, Fallback::Last));
        Columns {
            text_a,
            text_b,
            label,
            min_fields,
        }
    }
}

impl Fallback {
    /// The 0-based index and the text of this column in a row that has at
    /// least [`Columns::min_fields`] fields.
    fn pick<'a>(self, fields: &[&'a str]) -> (usize, &'a str) {
        let i = match self {
            Fallback::Index(i) => i,
            Fallback::Last => fields.len() - 1,
        };
        (i, fields[i])
    }
}

fn parse_label(kind: &LabelKind, value: &str) -> std::result::Result<Label, String> {
    match kind {
        LabelKind::Names(names) => match names.iter().position(|n| *n == value) {
            Some(class) => Ok(Label::Class(class)),
            None => {
                let expected: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
                let expected = expected.join(" or ");
                Err(format!(
                    "expected label {expected}, found `{}`",
                    shorten(value)
                ))
            }
        },
        LabelKind::Score => match value.parse::<f32>() {
            Ok(s) if (0.0..=5.0).contains(&s) => Ok(Label::Score(s)),
            _ => Err(format!(
                "expected a similarity score from 0 to 5, found `{}`",
                shorten(value)
            )),
        },
    }
}

/// Keeps error lines short when a sentence lands in the label column.
fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::glue_dir_or_skip;

    fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn parse_error(result: Result<Vec<Example>>) -> (usize, usize, String) {
        match result {
            Err(Error::Parse {
                line, column, msg, ..
            }) => (line, column, msg),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn task_names_round_trip_and_unknown_names_list_the_valid_ones() {
        for task in Task::ALL {
            assert_eq!(Task::from_name(task.name()).unwrap(), task);
            assert_eq!(task.name().parse::<Task>().unwrap(), task);
            assert!(task.metric_names().contains(&task.main_metric()));
        }
        assert_eq!(Task::from_name("SST-2").unwrap(), Task::Sst2);
        assert_eq!(Task::from_name("STS-B").unwrap(), Task::Stsb);
        assert_eq!(Task::from_name("mnli-m").unwrap(), Task::MnliMatched);
        let err = Task::from_name("glue").unwrap_err().to_string();
        assert!(
            err.contains("`glue`") && err.contains("sst-2") && err.contains("mnli-mm"),
            "{err}"
        );
    }

    #[test]
    fn task_metadata() {
        assert_eq!(Task::Stsb.num_labels(), 1);
        assert!(Task::Stsb.is_regression());
        assert_eq!(Task::MnliMismatched.num_labels(), 3);
        assert_eq!(Task::MnliMismatched.dir_name(), "MNLI");
        assert_eq!(Task::MnliMatched.split_file("dev"), "dev_matched.tsv");
        assert_eq!(Task::MnliMismatched.split_file("dev"), "dev_mismatched.tsv");
        assert_eq!(Task::MnliMismatched.split_file("train"), "train.tsv");
        assert_eq!(Task::Rte.split_file("dev"), "dev.tsv");
        assert_eq!(Task::Rte.label_names(), &["entailment", "not_entailment"]);
        let json = serde_json::to_string(&Task::Sst2).unwrap();
        assert_eq!(json, "\"sst2\"");
        assert_eq!(
            serde_json::from_str::<Task>("\"MNLI-MM\"").unwrap(),
            Task::MnliMismatched
        );
        assert!(serde_json::from_str::<Task>("\"nope\"").is_err());
    }

    #[test]
    fn quirks_bom_crlf_no_final_newline_unbalanced_quotes() {
        let dir = tempfile::tempdir().unwrap();
        let mrpc = write(
            dir.path(),
            "mrpc.tsv",
            "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t1\t2\t\" He said\tShe said \"\r\n0\t3\t4\ta\tb\r\n\r\n\n"
                .as_bytes(),
        );
        let rows = read_tsv(&mrpc, Task::Mrpc).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].text_a, "\" He said");
        assert_eq!(rows[0].text_b.as_deref(), Some("She said \""));
        assert_eq!(rows[0].label, Label::Class(1));
        assert_eq!(rows[1].label, Label::Class(0));

        let cola = write(
            dir.path(),
            "cola.tsv",
            b"src\t1\t\tGood one.\nsrc\t0\t*\tBad one",
        );
        let rows = read_tsv(&cola, Task::Cola).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].text_a, "Bad one");
        assert_eq!(rows[1].label, Label::Class(0));
        assert_eq!(rows[1].text_b, None);
    }

    #[test]
    fn columns_are_found_by_header_name_and_mnli_label_is_last() {
        let dir = tempfile::tempdir().unwrap();
        // Columns moved relative to the official layout.
        let sst = write(
            dir.path(),
            "sst.tsv",
            b"label\tid\tsentence\n1\tx\tnice film\n",
        );
        let rows = read_tsv(&sst, Task::Sst2).unwrap();
        assert_eq!(
            (rows[0].text_a.as_str(), rows[0].label),
            ("nice film", Label::Class(1))
        );

        let header = "index\tpromptID\tpairID\tgenre\tb1\tb2\tp1\tp2\tsentence1\tsentence2\tlabel1\tgold_label\n";
        let body = "0\t1\t2\tfiction\tx\tx\tx\tx\tA man.\tA person.\tentailment\tentailment\n\
                    1\t1\t2\tfiction\tx\tx\tx\tx\tA cat.\tNo cat.\tcontradiction\tcontradiction\n\
                    2\t1\t2\tfiction\tx\tx\tx\tx\tA dog.\tA big dog.\tneutral\tneutral\n";
        let mnli = write(dir.path(), "mnli.tsv", format!("{header}{body}").as_bytes());
        let rows = read_tsv(&mnli, Task::MnliMatched).unwrap();
        let labels: Vec<Label> = rows.iter().map(|r| r.label).collect();
        assert_eq!(labels, [Label::Class(1), Label::Class(0), Label::Class(2)]);
        assert_eq!(rows[1].text_b.as_deref(), Some("No cat."));

        // Without the header names, MNLI falls back to the last column.
        let renamed = write(
            dir.path(),
            "mnli2.tsv",
            format!("{}{body}", header.replace("gold_label", "gold")).as_bytes(),
        );
        assert_eq!(read_tsv(&renamed, Task::MnliMatched).unwrap().len(), 3);
    }

    #[test]
    fn malformed_rows_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let short = write(
            dir.path(),
            "short.tsv",
            b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n",
        );
        let (line, column, msg) = parse_error(read_tsv(&short, Task::Rte));
        assert_eq!((line, column), (3, 4));
        assert!(
            msg.contains("at least 4") && msg.contains("found 3"),
            "{msg}"
        );

        let bad_label = write(
            dir.path(),
            "label.tsv",
            b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n",
        );
        let (line, column, msg) = parse_error(read_tsv(&bad_label, Task::Rte));
        assert_eq!((line, column), (2, 4));
        assert!(
            msg.contains("`not_entailment`") && msg.contains("`maybe`"),
            "{msg}"
        );

        let cola = write(dir.path(), "cola.tsv", b"s\t1\t\tok\ns\t2\t\tno\n");
        let (line, column, _) = parse_error(read_tsv(&cola, Task::Cola));
        assert_eq!((line, column), (2, 2));

        let stsb_header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n";
        for bad in ["abc", "5.5", "NaN", ""] {
            let body = format!("{stsb_header}0\tg\tf\ty\to\ts\ts\tA.\tB.\t3.2\n1\tg\tf\ty\to\ts\ts\tA.\tB.\t{bad}\n");
            let path = write(dir.path(), "stsb.tsv", body.as_bytes());
            let (line, column, msg) = parse_error(read_tsv(&path, Task::Stsb));
            assert_eq!((line, column), (3, 10), "{bad}");
            assert!(msg.contains("score"), "{msg}");
        }

        let display = read_tsv(&short, Task::Rte).unwrap_err().to_string();
        assert!(display.contains("short.tsv:3: column 4:"), "{display}");
    }

    #[test]
    fn empty_and_non_utf8_files_are_parse_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write(dir.path(), "empty.tsv", b"");
        assert_eq!(parse_error(read_tsv(&empty, Task::Sst2)).0, 1);
        let header_only = write(dir.path(), "h.tsv", b"sentence\tlabel\n");
        let (line, _, msg) = parse_error(read_tsv(&header_only, Task::Sst2));
        assert_eq!(line, 2);
        assert!(msg.contains("no data rows"));
        let latin1 = write(
            dir.path(),
            "l.tsv",
            b"sentence\tlabel\ngood\t1\n0\tcaf\xe9\n",
        );
        let (line, column, msg) = parse_error(read_tsv(&latin1, Task::Sst2));
        assert_eq!((line, column, msg.as_str()), (3, 2, "invalid UTF-8"));
    }

    #[test]
    fn resolve_accepts_root_or_task_dir_and_names_both_paths_when_missing() {
        let root = tempfile::tempdir().unwrap();
        let task_dir = root.path().join("RTE");
        std::fs::create_dir(&task_dir).unwrap();
        let file = write(
            &task_dir,
            "dev.tsv",
            b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n",
        );
        assert_eq!(
            resolve_split_path(root.path(), Task::Rte, "dev").unwrap(),
            file
        );
        assert_eq!(
            resolve_split_path(&task_dir, Task::Rte, "dev").unwrap(),
            file
        );
        assert_eq!(read_split(root.path(), Task::Rte, "dev").unwrap().len(), 1);

        let err = resolve_split_path(root.path(), Task::Rte, "train").unwrap_err();
        let Error::Io { source, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        let msg = err.to_string();
        assert!(
            msg.contains("RTE/train.tsv")
                && msg.contains(&format!("{}", root.path().join("train.tsv").display())),
            "{msg}"
        );
    }

    #[test]
    fn real_glue_files_have_the_official_row_counts() {
        let Some(glue) = glue_dir_or_skip("real_glue_files_have_the_official_row_counts") else {
            return;
        };
        let expected = [
            (Task::Sst2, "train", 67_349),
            (Task::Sst2, "dev", 872),
            (Task::Mrpc, "train", 3_668),
            (Task::Mrpc, "dev", 408),
            (Task::Rte, "train", 2_490),
            (Task::Rte, "dev", 277),
            (Task::Cola, "train", 8_551),
            (Task::Cola, "dev", 1_043),
            (Task::Stsb, "train", 5_749),
            (Task::Stsb, "dev", 1_500),
            (Task::Qnli, "dev", 5_463),
            (Task::Wnli, "train", 635),
            (Task::Wnli, "dev", 71),
        ];
        for (task, split, rows) in expected {
            let examples = read_split(&glue, task, split).unwrap();
            assert_eq!(examples.len(), rows, "{task} {split}");
            let pair = !matches!(task, Task::Sst2 | Task::Cola);
            assert!(
                examples.iter().all(|e| e.text_b.is_some() == pair),
                "{task} {split}"
            );
        }

        let count = |task, split, class| {
            read_split(&glue, task, split)
                .unwrap()
                .iter()
                .filter(|e| e.label == Label::Class(class))
                .count()
        };
        assert_eq!(count(Task::Sst2, "train", 0), 29_780);
        assert_eq!(count(Task::Mrpc, "train", 1), 2_474);
        assert_eq!(count(Task::Qnli, "dev", 0), 2_702);

        let sst_dev = read_split(&glue, Task::Sst2, "dev").unwrap();
        assert_eq!(
            sst_dev[0].text_a.trim_end(),
            "it 's a charming and often affecting journey ."
        );
        assert_eq!(sst_dev[0].label, Label::Class(1));
        let mrpc = read_split(&glue, Task::Mrpc, "dev").unwrap();
        assert!(mrpc[0]
            .text_b
            .as_deref()
            .unwrap()
            .starts_with("\" The foodservice"));
        let stsb = read_split(&glue, Task::Stsb, "train").unwrap();
        assert_eq!(stsb[0].label, Label::Score(5.0));
        assert!(stsb
            .iter()
            .all(|e| matches!(e.label, Label::Score(s) if (0.0..=5.0).contains(&s))));
        let cola_dev = read_split(&glue, Task::Cola, "dev").unwrap();
        assert_eq!(
            cola_dev[0].text_a,
            "The sailors rode the breeze clear of the rocks."
        );
    }
}
