from cellgen.cli.data_tool import main
if __name__ == "__main__":
    raise SystemExit(main())
