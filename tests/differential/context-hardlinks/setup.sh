# Makes what git cannot hold; runs in the build context.
ln dir/a.txt dir/b.txt && ln dir/a.txt dir/c.txt
