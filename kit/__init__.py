"""The relocatable GPU kit: build (`make gpu-kit`), check (`make kit-check`), run (`kit/run.sh`).

See docs/gpu-kit.md."""
