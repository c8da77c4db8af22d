r = 3
o = r - 1
n = o + 9
g = n + 8
y = 1
v = g - 7
w = v + 4
print(w)
