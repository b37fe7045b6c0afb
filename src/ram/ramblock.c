/*
 * ramblock.c: lookups over a FyRamList.
 */
#include <string.h>

#include "ferry/ramblock.h"

FyRamBlock *fy_ram_list_find(const FyRamList *l, const char *idstr)
{
    for (int i = 0; l && i < l->count; i++) {
        if (l->blocks[i] && !strcmp(l->blocks[i]->idstr, idstr))
            return l->blocks[i];
    }
    return NULL;
}

uint64_t fy_ram_list_total(const FyRamList *l)
{
    uint64_t total = 0;
    for (int i = 0; l && i < l->count; i++) {
        if (l->blocks[i])
            total += l->blocks[i]->used_length;
    }
    return total;
}
