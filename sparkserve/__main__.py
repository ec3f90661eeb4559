from sparkserve.cli import main

if __name__ == "__main__":
    raise SystemExit(main())  # the command's exit status (2: usage)
