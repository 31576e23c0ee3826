"""Training: optimizers on flat parameter rows (`optim`), the stacked step (`step`), evaluation (`evaluate`),
one run's lifecycle (`run`), a stack of runs (`stack`) and a trained model's inference gaps (`gaps`)."""
