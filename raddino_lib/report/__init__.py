"""Report generation from frozen image encoders (the paper's section 4.2, Table 5).

LLaVA-1.5 style: a frozen encoder's patch tokens go through a two-layer MLP projector and are
spliced into a causal language model's input at an image placeholder; the projector and the LM
learn to write the report's findings section, with the loss on the report tokens only.

* :mod:`~raddino_lib.report.tokenizer` -- prompt template, byte-level BPE for small decoders;
* :mod:`~raddino_lib.report.model` -- projector, splicing, building or loading the LM;
* :mod:`~raddino_lib.report.data` -- findings sections, token sequences, batches;
* :mod:`~raddino_lib.report.train` -- training loop, cached checkpoints keyed by config;
* :mod:`~raddino_lib.report.generate` -- greedy decoding;
* :mod:`~raddino_lib.report.metrics` -- ROUGE-L, BLEU-4, Macro-F1-14, RG_ER (optional);
* :mod:`~raddino_lib.eval.bootstrap` -- medians and 95% intervals over test resamples;
* :mod:`~raddino_lib.report.experiment` -- :func:`run_report_generation`, the chapter's run.
"""

from __future__ import annotations
