"""Segmentation on frozen encoders (chapter 6): heads, the U-Net ceiling, data, Dice.

* :mod:`~raddino_lib.seg.heads` -- linear, ViTDet and UPerNet heads for ViT patch maps.
* :mod:`~raddino_lib.seg.unet` -- the end-to-end U-Net (segmentation-models-pytorch).
* :mod:`~raddino_lib.seg.data` -- tasks, split by subject, masks, augmented views.
* :mod:`~raddino_lib.seg.loss` / :mod:`~raddino_lib.seg.metrics` -- BCE + soft Dice; Dice.
* :mod:`~raddino_lib.seg.train` -- the training loop (best validation loss kept).
* :mod:`~raddino_lib.seg.experiment` -- Table 6 and the few-shot curve.
"""
