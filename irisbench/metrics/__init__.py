"""Image metrics: CLIP score (``clip_score``), FID and KID (``fid``), and the shapes-world CLIP (``shapes_clip``).

Modules here import torch, open_clip and torchmetrics lazily (inside functions), so importing this package
is cheap.
"""
