//! A real workload not written for this project's allocator: an inverted
//! word index over generated text, heavy in `String`, `Vec` and `BTreeMap`
//! allocation (the kind of code a search tool or a compiler pass runs). It
//! only uses the global allocator, so `bench-summary` runs it once with the
//! system allocator and once with kreclaim as `#[global_allocator]`.

use crate::bench::Rng;
use std::collections::{BTreeMap, BTreeSet};

const SYLLABLES: [&str; 24] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "po", "de", "an", "el", "or", "ul", "is", "ba",
    "ce", "fu", "gi", "ho", "ja", "ki", "mo", "zu",
];

/// A vocabulary of `n` distinct words of 1..=4 syllables.
fn vocabulary(n: usize, rng: &mut Rng) -> Vec<String> {
    let mut seen = BTreeSet::new();
    while seen.len() < n {
        let k = 1 + rng.below(4);
        let w: String = (0..k)
            .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
            .collect();
        seen.insert(w);
    }
    seen.into_iter().collect()
}

/// Zipf-like pick: small indices much more often.
fn zipf(rng: &mut Rng, n: usize) -> usize {
    let r = rng.below(n) + 1;
    rng.below(r)
}

/// Documents of sentences of words, as owned `String`s.
pub fn generate(docs: usize, words_per_doc: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let vocab = vocabulary(5000, &mut rng);
    (0..docs)
        .map(|_| {
            let mut d = String::new();
            for i in 0..words_per_doc {
                if i > 0 {
                    d.push(if rng.below(12) == 0 { '.' } else { ' ' });
                    if d.ends_with('.') {
                        d.push(' ');
                    }
                }
                d.push_str(&vocab[zipf(&mut rng, vocab.len())]);
            }
            d
        })
        .collect()
}

/// word -> postings (document, position).
pub type Index = BTreeMap<String, Vec<(u32, u32)>>;

pub fn build(docs: &[String]) -> Index {
    let mut idx: Index = BTreeMap::new();
    for (d, text) in docs.iter().enumerate() {
        for (pos, w) in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .enumerate()
        {
            let w = w.to_lowercase();
            idx.entry(w).or_default().push((d as u32, pos as u32));
        }
    }
    idx
}

/// Documents containing both words (sorted, deduplicated).
pub fn both(idx: &Index, a: &str, b: &str) -> Vec<u32> {
    let docs = |w: &str| -> BTreeSet<u32> {
        idx.get(w)
            .map(|p| p.iter().map(|&(d, _)| d).collect())
            .unwrap_or_default()
    };
    let (x, y) = (docs(a), docs(b));
    x.intersection(&y).copied().collect()
}

/// Runs the whole workload; returns a checksum (so nothing is optimised
/// away, and both allocators can be checked to compute the same thing).
pub fn run(docs: usize, words_per_doc: usize, queries: usize) -> u64 {
    let texts = generate(docs, words_per_doc, 42);
    let idx = build(&texts);
    let words: Vec<&String> = idx.keys().collect();
    let mut rng = Rng::new(7);
    let mut sum = idx.len() as u64;
    for _ in 0..queries {
        let a = words[zipf(&mut rng, words.len())];
        let b = words[zipf(&mut rng, words.len())];
        let hits = both(&idx, a, b);
        sum = sum.wrapping_mul(31).wrapping_add(hits.len() as u64);
        // A report line per query, as a tool would format it.
        let line = format!("{a} & {b}: {} docs, first {:?}", hits.len(), hits.first());
        sum = sum.wrapping_add(line.len() as u64);
    }
    // Top 20 words by frequency.
    let mut freq: Vec<(usize, &String)> = idx.iter().map(|(w, p)| (p.len(), w)).collect();
    freq.sort_unstable_by(|a, b| b.cmp(a));
    for (n, w) in freq.iter().take(20) {
        sum = sum.wrapping_add((*n as u64) ^ w.len() as u64);
    }
    sum
}
