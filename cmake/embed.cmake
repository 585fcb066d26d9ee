# cmake -DIN=file -DOUT=header -DNAME=symbol -P embed.cmake
# Writes header with `static const char NAME[]`: the file's bytes plus a NUL.
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE ${OUT} "/* Generated from ${IN} by cmake/embed.cmake. */\n"
  "static const char ${NAME}[] = { ${bytes} 0x00 };\n")
