"""The runner's shared vocabulary: requests, projections, windows on disk and atomic files.

Also class-path resolution and raster conventions. Nothing here imports another runner
package.
"""
