"""Toolbox-free data handling: the paper's long-tailed ``<H_n, S_k>`` splits and identity-labelled
image folders, Wesnoth's unit sprites and Widelands' characters (Debian packages) included."""
from .folders import (
    WESNOTH_UNITS,
    composite_rgba,
    pose_family,
    scan_folder,
    scan_wesnoth,
    split_identities,
    split_query_gallery,
)
from .longtail import label_counts, long_tail_split, split_summary

__all__ = [
    "long_tail_split", "label_counts", "split_summary", "scan_folder", "scan_wesnoth",
    "pose_family", "split_identities", "split_query_gallery", "composite_rgba", "WESNOTH_UNITS",
]
