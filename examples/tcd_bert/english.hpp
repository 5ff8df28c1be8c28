// english.hpp — real English text from Debian packages for the TCD example (its own data builders;
// the general readers it uses — GLUE TSV, MLM masking — are the library's data/glue.hpp, data/mlm.hpp).
//
// The paper pre-trains BERT on Wikipedia+BooksCorpus and fine-tunes on GLUE, which cannot be
// downloaded here (../shared/DATA.md). This header reads what Debian ships instead:
//  * WordNet 3.0 (package wordnet-base): data.{noun,verb,adj,adv}, one synset per line:
//      offset lex_filenum ss_type w_cnt(hex) word lex_id ... p_cnt pointers... [frames] | gloss
//    (wndb(5WN)); the gloss holds the definition(s) and quoted usage examples, "; "-separated.
//    Lines starting with two spaces are the license header.
//  * fortunes (package fortunes): category files of "%"-separated entries.
// From them: pretraining lines (glosses, examples, fortunes), three downstream tasks with real
// labels in GLUE's layout (build_task), and out-of-distribution text for masked-LM evaluation
// (read_ood_text: C headers, gettext UI strings, technical prose). scripts/build_tcd_corpus.sh
// unpacks all of these packages into one directory. Files are read through io::read_file: a
// missing file or a directory where a file is expected is an error naming the path; --corpus
// text may come from a pipe or stdin ("-").
// The code is in three parts: english_read.hpp (the WordNet and fortune readers),
// english_corpus.hpp (pre-training and out-of-distribution text), english_tasks.hpp (the built-in
// tasks).
#pragma once

#include "english_corpus.hpp"
#include "english_read.hpp"
#include "english_tasks.hpp"
