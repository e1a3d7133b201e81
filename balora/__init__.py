"""balora: budget-aware adaptive LoRA on Hugging Face PEFT.

Data flows one way: assets → models/data → importance → allocation → initialisation → methods
→ training → run → store → sweeps → report.
"""

__version__ = "0.1.0"
