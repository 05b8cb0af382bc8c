# cmake -DIN=<file> -DNAME=<symbol> -DOUT=<file.c> -P embed_static.cmake
# Writes `const char NAME[]` (NUL-terminated) and `const size_t NAME_len`.
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" hexlen)
math(EXPR len "${hexlen} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n\t" bytes "${bytes}")
set(body "// Generated from ${IN}; do not edit.\n#include <stddef.h>\n\n")
string(APPEND body "const unsigned char ${NAME}[] = {\n\t${bytes}0x00\n};\n")
string(APPEND body "const size_t ${NAME}_len = ${len};\n")
file(WRITE ${OUT}.tmp "${body}")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
file(REMOVE ${OUT}.tmp)
