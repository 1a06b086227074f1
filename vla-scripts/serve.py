"""Serve a VLA checkpoint to robots, the original's clients and evaluation harnesses (docs/serving.md).

    python vla-scripts/serve.py --checkpoint /ckpts/openvla-7b --unnorm_key bridge_orig [--port 8000] [--host 127.0.0.1]

Same as the `prismatic-serve` console command; every flag is a field of prismatic.serve.config.ServeConfig.
"""

from prismatic.serve.cli import main

if __name__ == "__main__":
    main()
