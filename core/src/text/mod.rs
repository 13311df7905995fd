//! Text analysis for the BM25 index: the same function turns stored text and query text into
//! terms, so a query word and a document word meet when they analyse alike.
//!
//! Pipeline, per word:
//! 1. **Segmentation** by Unicode word boundaries (UAX #29, `unicode-segmentation`): words
//!    keep inner apostrophes and dots (`don't`, `u.s.a`, `3.14`); punctuation and spaces
//!    are dropped.
//! 2. **Normalisation**: lower case; Latin letters folded to ASCII (`café` → `cafe`,
//!    `straße` → `strasse`) by canonical decomposition minus combining marks plus a small
//!    table for letters without one (`ø`, `æ`, `ł`, ...); other scripts are left as they
//!    are; a typographic apostrophe becomes `'`.
//! 3. **Stop words** (the language's list, none, or the caller's) are dropped.
//! 4. **Stemming** with the language's Snowball stemmer (`rust-stemmers`), unless off.
//!
//! Scripts written without spaces (Han, Hiragana, Thai, Lao, Khmer, Myanmar) come out of
//! UAX #29 one character per word; a run of such characters is indexed as overlapping
//! character bigrams (`東京都` → `東京`, `京都`), a lone character as itself — the usual
//! dictionary-free approach (Lucene's CJK bigram filter does the same), so a query in those
//! scripts matches documents sharing its character pairs. Words longer than
//! [`MAX_TERM_BYTES`] after normalisation are skipped (base64 blobs, hashes).

use std::borrow::Cow;
use std::collections::HashSet;

use unicode_normalization::char::{decompose_canonical, is_combining_mark};
use unicode_segmentation::UnicodeSegmentation;

/// Longest term kept, in bytes (UTF-8).
pub const MAX_TERM_BYTES: usize = 100;

/// Snowball languages: the name accepted in a collection's text config and its stemmer.
const LANGUAGES: &[(&str, rust_stemmers::Algorithm)] = &[
    ("arabic", rust_stemmers::Algorithm::Arabic),
    ("danish", rust_stemmers::Algorithm::Danish),
    ("dutch", rust_stemmers::Algorithm::Dutch),
    ("english", rust_stemmers::Algorithm::English),
    ("finnish", rust_stemmers::Algorithm::Finnish),
    ("french", rust_stemmers::Algorithm::French),
    ("german", rust_stemmers::Algorithm::German),
    ("greek", rust_stemmers::Algorithm::Greek),
    ("hungarian", rust_stemmers::Algorithm::Hungarian),
    ("italian", rust_stemmers::Algorithm::Italian),
    ("norwegian", rust_stemmers::Algorithm::Norwegian),
    ("portuguese", rust_stemmers::Algorithm::Portuguese),
    ("romanian", rust_stemmers::Algorithm::Romanian),
    ("russian", rust_stemmers::Algorithm::Russian),
    ("spanish", rust_stemmers::Algorithm::Spanish),
    ("swedish", rust_stemmers::Algorithm::Swedish),
    ("tamil", rust_stemmers::Algorithm::Tamil),
    ("turkish", rust_stemmers::Algorithm::Turkish),
];

/// The accepted language names, for error messages.
pub fn language_names() -> Vec<&'static str> {
    LANGUAGES.iter().map(|(n, _)| *n).collect()
}

/// Whether `name` is a supported language.
pub fn is_language(name: &str) -> bool {
    LANGUAGES.iter().any(|(n, _)| *n == name)
}

/// English function words dropped by default: articles, pronouns, auxiliaries,
/// prepositions, conjunctions and the like, which carry little to rank by. Matched after
/// lower-casing and folding, before stemming.
const ENGLISH_STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "it's",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// Which stop words an analyzer drops.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StopWords {
    /// The language's built-in list (English has one; the other languages drop none).
    #[default]
    Language,
    /// Keep every word.
    None,
    /// These words (normalised like text before comparing).
    List(Vec<String>),
}

/// How a collection analyses its text fields (part of the collection's config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyzerConfig {
    /// A Snowball language name (`english`, `french`, ...; see [`language_names`]).
    pub language: String,
    /// Reduce words to their stems with the language's Snowball stemmer.
    pub stem: bool,
    /// Which stop words to drop.
    pub stopwords: StopWords,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        AnalyzerConfig {
            language: "english".into(),
            stem: true,
            stopwords: StopWords::Language,
        }
    }
}

/// An analyzer built from its config.
pub struct Analyzer {
    stemmer: Option<rust_stemmers::Stemmer>,
    stop: HashSet<String>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("stem", &self.stemmer.is_some())
            .field("stop_words", &self.stop.len())
            .finish()
    }
}

/// Scripts written without spaces between words (indexed as character bigrams).
fn is_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF       // Thai, Lao
        | 0x1000..=0x109F     // Myanmar
        | 0x1780..=0x17FF     // Khmer
        | 0x3040..=0x309F     // Hiragana
        | 0x3400..=0x4DBF     // CJK extension A
        | 0x4E00..=0x9FFF     // CJK unified ideographs
        | 0xF900..=0xFAFF     // CJK compatibility ideographs
        | 0x20000..=0x3FFFF) // CJK extensions B and later
}

/// Latin letters that canonical decomposition leaves alone, folded by hand.
fn fold_special(c: char) -> Option<&'static str> {
    Some(match c {
        'ß' => "ss",
        'æ' => "ae",
        'œ' => "oe",
        'ø' => "o",
        'đ' | 'ð' => "d",
        'ħ' => "h",
        'ı' => "i",
        'ł' | 'ŀ' => "l",
        'þ' => "th",
        'ŧ' => "t",
        'ŋ' => "n",
        'ĳ' => "ij",
        'ſ' => "s",
        _ => return None,
    })
}

/// Is `c` a Latin letter outside ASCII (folded to ASCII)?
fn is_latin_extended(c: char) -> bool {
    matches!(c as u32, 0x00C0..=0x024F | 0x1E00..=0x1EFF)
}

/// Lower-case `word`, fold Latin letters to ASCII, turn typographic apostrophes into `'`.
fn normalise(word: &str, out: &mut String) {
    out.clear();
    // Whether the last character pushed is Latin (a combining mark after it is an accent
    // to drop; after another script it is part of the letter, e.g. a Devanagari vowel sign).
    let mut after_latin = false;
    for upper in word.chars() {
        for c in upper.to_lowercase() {
            if c.is_ascii() {
                out.push(c);
                after_latin = true;
            } else if c == '\u{2019}' || c == '\u{02BC}' {
                out.push('\'');
                after_latin = true;
            } else if is_latin_extended(c) {
                if let Some(s) = fold_special(c) {
                    out.push_str(s);
                } else {
                    decompose_canonical(c, |d| {
                        if !is_combining_mark(d) {
                            out.push(d);
                        }
                    });
                }
                after_latin = true;
            } else if is_combining_mark(c) {
                if !after_latin && !out.is_empty() {
                    out.push(c);
                }
            } else {
                out.push(c);
                after_latin = false;
            }
        }
    }
}

impl Analyzer {
    /// Build the analyzer `config` describes. The caller has validated the language.
    pub fn new(config: &AnalyzerConfig) -> Analyzer {
        let algorithm = LANGUAGES
            .iter()
            .find(|(n, _)| *n == config.language)
            .map(|(_, a)| *a);
        let mut stop = HashSet::new();
        let mut buf = String::new();
        let mut add = |w: &str| {
            normalise(w, &mut buf);
            stop.insert(buf.clone());
        };
        match &config.stopwords {
            StopWords::Language if config.language == "english" => {
                for w in ENGLISH_STOP_WORDS {
                    add(w);
                }
            }
            StopWords::Language | StopWords::None => {}
            StopWords::List(words) => words.iter().for_each(|w| add(w)),
        }
        Analyzer {
            stemmer: algorithm
                .filter(|_| config.stem)
                .map(rust_stemmers::Stemmer::create),
            stop,
        }
    }

    /// The terms of `text`, in order (repeats kept), each passed to `emit`.
    pub fn analyze(&self, text: &str, mut emit: impl FnMut(&str)) {
        let mut word = String::new();
        // The pending run of unspaced-script characters: the previous one and where it
        // ended, and whether it has emitted a bigram yet.
        let mut run: Option<(char, usize, bool)> = None;
        let flush = |run: &mut Option<(char, usize, bool)>, emit: &mut dyn FnMut(&str)| {
            if let Some((c, _, false)) = run.take() {
                let mut b = [0u8; 4];
                emit(c.encode_utf8(&mut b));
            }
        };
        for (at, w) in text.unicode_word_indices() {
            let mut chars = w.chars();
            let first = chars.next();
            if let (Some(c), None) = (first, chars.next()) {
                if is_unspaced(c) {
                    match run {
                        Some((prev, end, _)) if end == at => {
                            let mut pair = String::with_capacity(8);
                            pair.push(prev);
                            pair.push(c);
                            emit(&pair);
                            run = Some((c, at + w.len(), true));
                        }
                        _ => {
                            flush(&mut run, &mut emit);
                            run = Some((c, at + w.len(), false));
                        }
                    }
                    continue;
                }
            }
            flush(&mut run, &mut emit);
            normalise(w, &mut word);
            if word.is_empty() || word.len() > MAX_TERM_BYTES || self.stop.contains(&word) {
                continue;
            }
            match &self.stemmer {
                Some(s) => {
                    let stem: Cow<'_, str> = s.stem(&word);
                    if !stem.is_empty() {
                        emit(&stem);
                    }
                }
                None => emit(&word),
            }
        }
        flush(&mut run, &mut emit);
    }

    /// The terms of `text` as owned strings (for tests and the Python `analyze`).
    pub fn terms(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.analyze(text, |t| out.push(t.to_owned()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn english() -> Analyzer {
        Analyzer::new(&AnalyzerConfig::default())
    }

    #[test]
    fn english_words_are_lowered_folded_stopped_and_stemmed() {
        let a = english();
        assert_eq!(
            a.terms("The Cafés of São Paulo were RUNNING; what is CORBA?"),
            vec!["cafe", "sao", "paulo", "run", "corba"]
        );
        assert_eq!(
            a.terms("Straße, Ørsted and Łódź"),
            vec!["strass", "orst", "lodz"]
        );
        // Possessives: the Snowball English stemmer strips 's (typographic apostrophe too).
        assert_eq!(
            a.terms("Moses's rod, Aaron’s rod"),
            vec!["mose", "rod", "aaron", "rod"]
        );
        assert_eq!(a.terms(""), Vec::<String>::new());
        assert_eq!(a.terms("the of and"), Vec::<String>::new());
    }

    #[test]
    fn options_turn_stemming_and_stop_words_off_or_replace_them() {
        let plain = Analyzer::new(&AnalyzerConfig {
            stem: false,
            stopwords: StopWords::None,
            ..AnalyzerConfig::default()
        });
        assert_eq!(
            plain.terms("The running dogs"),
            vec!["the", "running", "dogs"]
        );
        let custom = Analyzer::new(&AnalyzerConfig {
            stopwords: StopWords::List(vec!["Dogs".into()]),
            ..AnalyzerConfig::default()
        });
        assert_eq!(custom.terms("The running dogs"), vec!["the", "run"]);
        let french = Analyzer::new(&AnalyzerConfig {
            language: "french".into(),
            ..AnalyzerConfig::default()
        });
        assert_eq!(french.terms("les chevaux"), vec!["le", "cheval"]);
    }

    #[test]
    fn unspaced_scripts_become_bigrams_and_never_fail() {
        let a = english();
        assert_eq!(
            a.terms("東京都に行く"),
            vec!["東京", "京都", "都に", "に行", "行く"]
        );
        assert_eq!(a.terms("東 京"), vec!["東", "京"]);
        // Thai, Korean (spaced, kept as words), Arabic, emoji, control characters.
        assert!(!a.terms("ภาษาไทย").is_empty());
        assert_eq!(a.terms("한국어 문장"), vec!["한국어", "문장"]);
        assert_eq!(a.terms("مرحبا بالعالم").len(), 2);
        assert_eq!(a.terms("🙂 \u{0}\u{7} \u{301}x"), vec!["x"]);
        let long = "x".repeat(MAX_TERM_BYTES + 1);
        assert_eq!(a.terms(&format!("{long} ok")), vec!["ok"]);
    }
}
