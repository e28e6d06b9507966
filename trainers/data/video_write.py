"""The video writers moved to `magvit2.video_write` (the pipeline's `export_to_video` shares them); these names stay
importable from here."""

from magvit2.video_write import export_to_video, save_image_grid, write_gif, write_video

__all__ = ["export_to_video", "save_image_grid", "write_gif", "write_video"]
