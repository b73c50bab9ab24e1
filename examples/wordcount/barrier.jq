# The seed README's map-reduce barrier, after setting aside the reduce's own
# output (data/total.txt), which is in no map folder.
map(select(.Key | endswith("/total.txt") | not))
| group_by(.Key | split("/") | .[:-1]) | all(
  any(.Key | split("/") | .[-1] == "input.txt") and
  any(.Key | split("/") | .[-1] == "output.txt")
)
