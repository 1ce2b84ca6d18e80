from brainsynth.cli import main

main()
