"""Makes the source tree importable as ``athens`` and ``tests`` whatever the working directory."""
