"""``python -m simulator --port P [--seed S] ...``."""

from simulator.app import main

if __name__ == "__main__":
    main()
