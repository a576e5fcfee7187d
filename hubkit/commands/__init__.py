"""One thin module per verb: parse options, call one library function, render its result."""
