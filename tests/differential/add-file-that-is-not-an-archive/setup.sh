# Makes what git cannot hold; runs in the build context.
printf "plain text\n" > data && gzip -n data
