"""Image metrics: CLIP score (``clip_score``), FID and KID (``fid``), and the shapes-world CLIP (loaded by
``shapes_clip``, trained and checked by ``shapes_clip_train``; ``clip_model`` holds what they share).

Modules here import torch, open_clip and torchmetrics lazily (inside functions), so importing this package
is cheap.
"""
