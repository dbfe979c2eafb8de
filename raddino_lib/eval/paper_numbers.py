"""The paper's published numbers that chapters show beside this run's (AUPRC and accuracy
in percent, mean and std over 5 seeds or folds, as printed in the preprint)."""

from __future__ import annotations

# Table 3: VinDr-CXR, linear probe, AUPRC mean +- std (1500 train / 3000 test images).
TABLE3_VINDR: dict[str, dict[str, tuple[float, float]]] = {
    "CLIP@224": {"LO": (22.95, 1.17), "CM": (52.91, 1.53), "PL-T": (22.31, 2.33),
                 "AE": (56.45, 2.02), "PF": (25.12, 1.35), "TB": (18.41, 1.43)},
    "CLIP@336": {"LO": (23.88, 1.05), "CM": (53.87, 1.40), "PL-T": (23.71, 3.61),
                 "AE": (58.16, 1.62), "PF": (27.67, 0.69), "TB": (19.93, 1.99)},
    "BioViL-T": {"LO": (34.07, 3.20), "CM": (41.10, 1.94), "PL-T": (26.50, 4.32),
                 "AE": (37.01, 1.19), "PF": (32.35, 2.38), "TB": (34.08, 3.65)},
    "BiomedCLIP": {"LO": (38.33, 1.93), "CM": (66.94, 0.95), "PL-T": (29.62, 3.57),
                   "AE": (62.66, 1.90), "PF": (36.78, 3.85), "TB": (38.21, 4.85)},
    "MRM": {"LO": (43.38, 2.36), "CM": (82.04, 1.43), "PL-T": (45.05, 4.94),
            "AE": (75.14, 1.30), "PF": (55.12, 3.44), "TB": (64.42, 4.15)},
    "RAD-DINO": {"LO": (47.55, 2.96), "CM": (82.51, 1.66), "PL-T": (46.13, 4.98),
                 "AE": (83.53, 0.73), "PF": (69.67, 2.29), "TB": (70.36, 3.51)},
}  # fmt: skip

# Table 4: CANDID-PTX (AUPRC) and RSNA Pneumonia (AUPRC, AUROC).
TABLE4_CANDID_RSNA: dict[str, dict[str, tuple[float, float]]] = {
    "CLIP@224": {"PTX": (41.71, 1.57), "Tube": (25.17, 0.98), "Fx": (4.02, 1.14),
                 "PNA AUPRC": (60.07, 2.01), "PNA AUROC": (83.65, 0.71)},
    "CLIP@336": {"PTX": (43.60, 1.15), "Tube": (29.61, 1.67), "Fx": (5.20, 1.97),
                 "PNA AUPRC": (59.96, 1.70), "PNA AUROC": (84.22, 0.37)},
    "BioViL-T": {"PTX": (65.55, 1.48), "Tube": (31.10, 3.40), "Fx": (4.35, 1.88),
                 "PNA AUPRC": (66.78, 1.51), "PNA AUROC": (86.91, 0.45)},
    "BiomedCLIP": {"PTX": (60.35, 1.99), "Tube": (46.39, 4.43), "Fx": (8.14, 2.46),
                   "PNA AUPRC": (68.39, 1.68), "PNA AUROC": (87.49, 0.40)},
    "MRM": {"PTX": (74.88, 2.37), "Tube": (58.16, 4.89), "Fx": (12.25, 7.11),
            "PNA AUPRC": (71.44, 1.49), "PNA AUROC": (88.98, 0.51)},
    "RAD-DINO": {"PTX": (80.08, 1.55), "Tube": (90.80, 1.56), "Fx": (13.43, 4.10),
                 "PNA AUPRC": (70.99, 1.75), "PNA AUROC": (88.38, 0.63)},
}  # fmt: skip

# Table A.1: PadChest lateral views (AUPRC): vertebral degenerative changes, pleural
# effusion, costophrenic angle blunting.
TABLE_A1_LATERAL: dict[str, dict[str, tuple[float, float]]] = {
    "BioViL-T": {"VDC": (57.12, 2.44), "PE": (82.10, 2.36), "CAB": (69.69, 2.21)},
    "BiomedCLIP": {"VDC": (69.06, 1.24), "PE": (90.60, 1.02), "CAB": (76.21, 2.92)},
    "MRM": {"VDC": (76.97, 1.75), "PE": (96.45, 0.98), "CAB": (83.09, 2.85)},
    "RAD-DINO": {"VDC": (80.33, 1.32), "PE": (94.53, 0.95), "CAB": (83.57, 2.63)},
}

# Table 7: metadata from frozen embeddings, 5-fold CV accuracy mean (std), MIMIC-CXR
# "no findings" subset (60.1k AP/PA images).
TABLE7_METADATA: dict[str, dict[str, tuple[float, float]]] = {
    "BioViL-T": {"sex": (75.1, 0.3), "age": (60.8, 0.5), "weight": (43.8, 0.5),
                 "bmi": (47.6, 0.1)},
    "BiomedCLIP": {"sex": (86.0, 0.3), "age": (56.5, 0.5), "weight": (52.8, 0.4),
                   "bmi": (54.2, 0.1)},
    "RAD-DINO": {"sex": (99.6, 0.1), "age": (72.3, 0.3), "weight": (62.4, 0.4),
                 "bmi": (71.3, 0.2)},
}  # fmt: skip


def paper_frame(table: dict[str, dict[str, tuple[float, float]]]):
    """A table of ``"mean ± std"`` strings, models as rows (for display beside this run's)."""
    import pandas as pd

    return pd.DataFrame(
        {m: {k: f"{v[0]:.2f} ± {v[1]:.2f}" for k, v in row.items()} for m, row in table.items()}
    ).T


# Table 6: segmentation Dice "mean (std)" in percent; frozen backbones except the U-Nets.
# Columns: lungs (left/right averaged), lung zones (six averaged), pneumothorax, chest tubes,
# ribs (20 averaged). Rows: (encoder, decoder).
TABLE6_SEGMENTATION: dict[str, dict[str, tuple[float, float]]] = {
    "NN-UNet (U-Net, end to end)": {"lungs": (98.0, 1.1), "zones": (92.6, 10.2),
        "pneumothorax": (89.3, 27.3), "chest_tubes": (93.1, 21.8), "ribs": (86.2, 2.8)},
    "EfficientNet-B6 (U-Net, end to end)": {"lungs": (98.3, 1.1), "zones": (92.7, 10.1),
        "pneumothorax": (89.5, 26.9), "chest_tubes": (95.2, 17.2), "ribs": (88.9, 2.6)},
    "BioViL-T (linear)": {"lungs": (83.2, 3.2), "zones": (69.4, 9.0),
        "pneumothorax": (76.0, 39.9), "chest_tubes": (83.0, 37.0), "ribs": (59.1, 4.7)},
    "BiomedCLIP (linear)": {"lungs": (90.4, 2.6), "zones": (76.2, 10.2),
        "pneumothorax": (27.4, 41.3), "chest_tubes": (67.6, 46.4), "ribs": (67.4, 4.5)},
    "RAD-DINO no MIM (linear)": {"lungs": (91.3, 2.5), "zones": (78.8, 9.6),
        "pneumothorax": (37.5, 45.4), "chest_tubes": (78.5, 39.6), "ribs": (67.3, 4.7)},
    "RAD-DINO (linear)": {"lungs": (95.9, 1.5), "zones": (85.7, 9.8),
        "pneumothorax": (47.4, 46.7), "chest_tubes": (90.4, 26.8), "ribs": (73.4, 3.6)},
    "RAD-DINO (ViTDet)": {"lungs": (97.8, 1.2), "zones": (90.7, 10.0),
        "pneumothorax": (52.5, 46.9), "chest_tubes": (85.6, 32.7), "ribs": (83.6, 2.9)},
    "RAD-DINO (UPerNet)": {"lungs": (98.0, 1.1), "zones": (91.2, 10.1),
        "pneumothorax": (87.2, 29.4), "chest_tubes": (94.4, 20.0), "ribs": (85.3, 2.6)},
}  # fmt: skip


# Table 5: report generation (Findings section, MIMIC-CXR official test split, N = 2,461) with a
# two-layer MLP projector and Vicuna-7B v1.5; "median [95% interval]" over 500 bootstrap
# samples, in percent. Columns: ROUGE-L, BLEU-4, RG_ER, Macro-F1-14 (CheXbert, uncertain as
# negative).
TABLE5_REPORT_GENERATION: dict[str, dict[str, tuple[float, float, float]]] = {
    "CLIP@224": {"rouge_l": (23.0, 22.7, 23.4), "bleu4": (8.3, 7.9, 8.6),
                 "rg_er": (20.3, 19.8, 20.7), "macro_f1_14": (24.7, 23.6, 26.0)},
    "CLIP@336": {"rouge_l": (23.3, 22.9, 23.7), "bleu4": (8.4, 8.0, 8.7),
                 "rg_er": (20.4, 19.9, 20.9), "macro_f1_14": (25.3, 24.2, 26.5)},
    "DINOv2": {"rouge_l": (22.7, 22.4, 23.2), "bleu4": (7.6, 7.3, 7.9),
               "rg_er": (18.5, 18.1, 19.1), "macro_f1_14": (18.6, 17.8, 19.5)},
    "BiomedCLIP": {"rouge_l": (23.1, 22.8, 23.5), "bleu4": (7.9, 7.5, 8.2),
                   "rg_er": (20.4, 19.9, 20.8), "macro_f1_14": (24.9, 23.8, 26.1)},
    "BioViL-T": {"rouge_l": (23.5, 23.2, 23.9), "bleu4": (7.3, 7.0, 7.6),
                 "rg_er": (22.4, 21.9, 22.8), "macro_f1_14": (28.4, 27.2, 29.8)},
    "RAD-DINO-Control": {"rouge_l": (24.2, 23.8, 24.6), "bleu4": (9.0, 8.7, 9.4),
                         "rg_er": (22.4, 21.9, 22.9), "macro_f1_14": (31.5, 30.1, 32.9)},
    "RAD-DINO": {"rouge_l": (24.6, 24.2, 25.0), "bleu4": (9.3, 8.9, 9.7),
                 "rg_er": (22.8, 22.3, 23.3), "macro_f1_14": (31.9, 30.4, 33.3)},
}  # fmt: skip

# Table 5's input side (pixels) and image-token count per encoder. The preprint prints
# "316 x 316" for CLIP@336 (576 = 24 x 24 tokens of 14 px, i.e. 336 px): kept as printed.
TABLE5_INPUT: dict[str, tuple[int, int]] = {
    "CLIP@224": (224, 256), "CLIP@336": (316, 576), "DINOv2": (518, 1369),
    "BiomedCLIP": (224, 256), "BioViL-T": (512, 196), "RAD-DINO-Control": (518, 1369),
    "RAD-DINO": (518, 1369),
}  # fmt: skip

# Table 2: weight initialisation, VinDr-CXR linear probe, AUPRC mean +- std over 5 seeds
# (DINOv2 frozen; RAD-DINO pretrained on chest X-rays from random or DINOv2 ViT-B weights).
TABLE2_INIT: dict[str, dict[str, tuple[float, float]]] = {
    "DINOv2 (ViT-B)": {"LO": (26.74, 1.36), "CM": (59.45, 1.62), "PL-T": (29.97, 3.71),
                       "AE": (64.06, 1.40), "PF": (29.88, 1.06), "TB": (26.68, 0.90)},
    "DINOv2 (ViT-G)": {"LO": (31.22, 5.98), "CM": (64.31, 1.54), "PL-T": (32.97, 2.33),
                       "AE": (66.68, 2.26), "PF": (34.16, 1.62), "TB": (30.83, 3.29)},
    "RAD-DINO (random init.)": {"LO": (43.94, 2.80), "CM": (86.86, 1.13), "PL-T": (42.45, 3.91),
                                "AE": (82.89, 0.86), "PF": (49.96, 1.78), "TB": (52.84, 2.47)},
    "RAD-DINO (continual)": {"LO": (47.55, 2.96), "CM": (82.51, 1.66), "PL-T": (46.13, 4.98),
                             "AE": (83.53, 0.73), "PF": (69.67, 2.29), "TB": (70.36, 3.51)},
}  # fmt: skip
#: Table 2's printed macro averages ("Agg").
TABLE2_AGG: dict[str, float] = {
    "DINOv2 (ViT-B)": 39.46,
    "DINOv2 (ViT-G)": 43.36,
    "RAD-DINO (random init.)": 59.82,
    "RAD-DINO (continual)": 66.63,
}
